data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name
  account   = data.aws_caller_identity.current.account_id

  gateway_ids = { for az, g in var.gateways : az => "${var.name}-${az}" }

  controller = var.controller_endpoint != null

  # Per gateway: where its CA, certificate and key come from ({id} replaced by its id).
  tls_sources = var.controller_tls_sources == null ? {} : {
    for az, id in local.gateway_ids : az => {
      ca   = var.controller_tls_sources.ca
      cert = replace(var.controller_tls_sources.cert, "{id}", id)
      key  = replace(var.controller_tls_sources.key, "{id}", id)
    }
  }
  all_tls_sources = distinct(flatten([for s in values(local.tls_sources) : values(s)]))
  ssm_parameter_arns = [
    for s in local.all_tls_sources :
    startswith(trimprefix(s, "ssm:"), "arn:") ? trimprefix(s, "ssm:") :
    "arn:${local.partition}:ssm:${local.region}:${local.account}:parameter/${trimprefix(trimprefix(s, "ssm:"), "/")}"
    if startswith(s, "ssm:")
  ]
  secret_arns = [for s in local.all_tls_sources : trimprefix(s, "secretsmanager:") if startswith(s, "secretsmanager:")]

  metrics_listen = length(var.metrics_allowed_cidrs) > 0 ? "0.0.0.0:${var.metrics_port}" : "127.0.0.1:${var.metrics_port}"
  log_group_name = "/bulkhead/${var.name}/decisions"

  # Every (gateway, route table) pair gets the default route(s).
  routes = merge([
    for az, g in var.gateways : {
      for rt in g.route_table_ids : "${az}/${rt}" => { az = az, route_table_id = rt }
    }
  ]...)

  tags = merge(var.tags, { "bulkhead:deployment" = var.name })
}

################################################################################
# Security group of the static interfaces (and of the instances' boot interfaces)
################################################################################

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-"
  description = "Bulkhead gateways ${var.name}: workload traffic in, everything out"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "workloads" {
  for_each = toset(var.workload_cidrs)

  security_group_id = aws_security_group.this.id
  description       = "Traffic of the workloads routed through the gateways (any protocol, any port)"
  ip_protocol       = "-1"
  cidr_ipv4         = strcontains(each.value, ":") ? null : each.value
  cidr_ipv6         = strcontains(each.value, ":") ? each.value : null
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each = toset(var.metrics_allowed_cidrs)

  security_group_id = aws_security_group.this.id
  description       = "Prometheus scrapes of /metrics, /healthz and /readyz"
  ip_protocol       = "tcp"
  from_port         = var.metrics_port
  to_port           = var.metrics_port
  cidr_ipv4         = strcontains(each.value, ":") ? null : each.value
  cidr_ipv6         = strcontains(each.value, ":") ? each.value : null
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "ipv4" {
  #checkov:skip=CKV_AWS_382:An egress gateway forwards the workloads' traffic to any destination; the policy it enforces decides what leaves, not the security group.
  security_group_id = aws_security_group.this.id
  description       = "Forwarded workload traffic and the gateway's own (controller, AWS APIs)"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "ipv6" {
  #checkov:skip=CKV_AWS_382:An egress gateway forwards the workloads' traffic to any destination; the policy it enforces decides what leaves, not the security group.
  count = var.ipv6_enabled ? 1 : 0

  security_group_id = aws_security_group.this.id
  description       = "Forwarded workload traffic (IPv6)"
  ip_protocol       = "-1"
  cidr_ipv6         = "::/0"
  tags              = local.tags
}

################################################################################
# The static interface of each gateway: the route target that outlives instances
################################################################################

resource "aws_network_interface" "this" {
  for_each = var.gateways

  description       = "Bulkhead gateway ${local.gateway_ids[each.key]}: route target of the workload subnets"
  subnet_id         = each.value.subnet_id
  private_ips       = each.value.private_ip == null ? null : [each.value.private_ip]
  security_groups   = [aws_security_group.this.id]
  source_dest_check = false
  tags              = merge(local.tags, { Name = local.gateway_ids[each.key], "bulkhead:gateway" = local.gateway_ids[each.key] })
}

resource "aws_eip" "this" {
  #checkov:skip=CKV2_AWS_19:The address belongs to the static network interface, which is attached to whichever instance runs the gateway (the instance changes, the address does not).
  for_each = var.associate_public_ip ? var.gateways : {}

  domain            = "vpc"
  network_interface = aws_network_interface.this[each.key].id
  tags              = merge(local.tags, { Name = local.gateway_ids[each.key] })
}

resource "aws_route" "ipv4" {
  for_each = local.routes

  route_table_id         = each.value.route_table_id
  destination_cidr_block = "0.0.0.0/0"
  network_interface_id   = aws_network_interface.this[each.value.az].id
}

resource "aws_route" "ipv6" {
  for_each = var.ipv6_enabled ? local.routes : {}

  route_table_id              = each.value.route_table_id
  destination_ipv6_cidr_block = "::/0"
  network_interface_id        = aws_network_interface.this[each.value.az].id
}

################################################################################
# Instances: a launch template per gateway, run by an ASG of one (ha_mode) or directly
################################################################################

resource "aws_launch_template" "this" {
  #checkov:skip=CKV_AWS_88:The boot interface needs a way to the AWS APIs (attaching the static interface, fetching certificates, SSM) before the static interface is attached; primary_public_ip = false where the subnet has VPC endpoints or a NAT gateway. Its security group admits only the workload CIDRs and the metrics scrapers.
  for_each = var.gateways

  name_prefix            = "${local.gateway_ids[each.key]}-"
  description            = "Bulkhead gateway ${local.gateway_ids[each.key]}"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  key_name               = var.key_name
  update_default_version = true
  ebs_optimized          = true

  user_data = base64encode(templatefile("${path.module}/templates/user-data.yaml.tftpl", {
    gateway_id          = local.gateway_ids[each.key]
    eni_id              = var.ha_mode ? aws_network_interface.this[each.key].id : ""
    enforcement_mode    = var.enforcement_mode
    controller_endpoint = local.controller ? var.controller_endpoint : ""
    tls                 = lookup(local.tls_sources, each.key, null)
    workload_cidrs      = join(" ", var.workload_cidrs)
    metrics_listen      = local.metrics_listen
    cloudwatch          = var.log_destination == "cloudwatch"
    log_group_name      = local.log_group_name
    enable_ssm          = var.enable_ssm
    region              = local.region
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = var.root_device_name

    ebs {
      encrypted             = true
      kms_key_id            = var.ebs_kms_key_arn
      volume_type           = "gp3"
      volume_size           = var.root_volume_size
      delete_on_termination = true
    }
  }

  network_interfaces {
    device_index                = 0
    subnet_id                   = each.value.subnet_id
    security_groups             = [aws_security_group.this.id]
    associate_public_ip_address = var.primary_public_ip
    delete_on_termination       = true
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = local.gateway_ids[each.key], "bulkhead:gateway" = local.gateway_ids[each.key] })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = local.gateway_ids[each.key] })
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.controller_endpoint == null || var.controller_tls_sources != null
      error_message = "controller_endpoint needs controller_tls_sources (the gateways' CA, certificate and key)."
    }
  }
}

resource "aws_autoscaling_group" "this" {
  for_each = var.ha_mode ? var.gateways : {}

  name_prefix               = "${local.gateway_ids[each.key]}-"
  min_size                  = 1
  max_size                  = 1
  desired_capacity          = 1
  vpc_zone_identifier       = [each.value.subnet_id]
  health_check_type         = "EC2"
  health_check_grace_period = 120

  launch_template {
    id      = aws_launch_template.this[each.key].id
    version = aws_launch_template.this[each.key].latest_version
  }

  # A new launch template version (AMI, settings) replaces the instance: the old one goes first,
  # since the static interface can be attached to one instance at a time.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = local.gateway_ids[each.key] })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

resource "aws_instance" "this" {
  #checkov:skip=CKV_AWS_126:Detailed monitoring is enabled in the launch template the instance is launched from.
  #checkov:skip=CKV_AWS_79:IMDSv2 is required by the launch template (metadata_options.http_tokens = required).
  #checkov:skip=CKV_AWS_8:The root volume is encrypted by the launch template's block device mapping.
  #checkov:skip=CKV_AWS_135:EBS optimisation is set in the launch template.
  #checkov:skip=CKV2_AWS_41:The instance profile is set in the launch template the instance is launched from.
  for_each = var.ha_mode ? {} : var.gateways

  launch_template {
    id      = aws_launch_template.this[each.key].id
    version = aws_launch_template.this[each.key].latest_version
  }

  tags = merge(local.tags, { Name = local.gateway_ids[each.key] })
}

resource "aws_network_interface_attachment" "this" {
  for_each = var.ha_mode ? {} : var.gateways

  instance_id          = aws_instance.this[each.key].id
  network_interface_id = aws_network_interface.this[each.key].id
  device_index         = 1
}

################################################################################
# Decision records in CloudWatch Logs (log_destination = cloudwatch)
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:Encrypted with log_kms_key_arn when given; otherwise CloudWatch Logs encrypts it with its own key, and the module does not create KMS keys.
  count = var.log_destination == "cloudwatch" ? 1 : 0

  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}
