################################################################################
# Instance role: attach its own static interface, read its own certificates,
# write its own log group, and (enable_ssm) be reachable through SSM
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "EC2AssumeRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name_prefix        = "${var.name}-"
  description        = "Bulkhead gateways ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.this.name
  tags        = local.tags
}

data "aws_iam_policy_document" "gateway" {
  # DescribeNetworkInterfaces supports no resource-level permissions: AWS accepts only "*".
  statement {
    sid       = "FindTheStaticInterface"
    actions   = ["ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }

  # Attach and detach only this deployment's static interfaces, and only to this deployment's
  # instances (tagged by the launch template).
  dynamic "statement" {
    for_each = var.ha_mode ? [1] : []
    content {
      sid       = "MoveTheStaticInterfaces"
      actions   = ["ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface"]
      resources = [for eni in aws_network_interface.this : eni.arn]
    }
  }

  dynamic "statement" {
    for_each = var.ha_mode ? [1] : []
    content {
      sid       = "OntoTheDeploymentsInstances"
      actions   = ["ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface"]
      resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*"]

      condition {
        test     = "StringEquals"
        variable = "aws:ResourceTag/bulkhead:deployment"
        values   = [var.name]
      }
    }
  }

  dynamic "statement" {
    for_each = length(local.ssm_parameter_arns) > 0 ? [1] : []
    content {
      sid       = "ReadTheControllerCertificates"
      actions   = ["ssm:GetParameter"]
      resources = local.ssm_parameter_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.secret_arns) > 0 ? [1] : []
    content {
      sid       = "ReadTheControllerCertificateSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.tls_kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptTheControllerCertificates"
      actions   = ["kms:Decrypt"]
      resources = var.tls_kms_key_arns
    }
  }

  dynamic "statement" {
    for_each = var.log_destination == "cloudwatch" ? [1] : []
    content {
      sid       = "ShipTheDecisionLog"
      actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      resources = ["${aws_cloudwatch_log_group.this[0].arn}:*"]
    }
  }
}

resource "aws_iam_role_policy" "gateway" {
  name_prefix = "bulkhead-gateway-"
  role        = aws_iam_role.this.id
  policy      = data.aws_iam_policy_document.gateway.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  count = var.enable_ssm ? 1 : 0

  role       = aws_iam_role.this.name
  policy_arn = "arn:${local.partition}:iam:aws:policy/AmazonSSMManagedInstanceCore"
}
