# A VPC in two availability zones: in each, a public subnet holding that zone's gateway and a
# workload subnet whose default route points at the gateway's static interface. Workloads reach
# the internet only through Bulkhead.

provider "aws" {
  region = var.region
}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:The example takes the first two zones of whatever region it is applied in; a real deployment names its zones.
  state = "available"
}

locals {
  name = "bulkhead-example"
  azs  = slice(data.aws_availability_zones.available.names, 0, 2)
  cidr = "10.60.0.0/16"
  tags = { Example = "bulkhead-complete" }
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:Flow logs are left to the reader's account standard; Bulkhead's decision records already log every egress flow.
  cidr_block           = local.cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name })
}

# Nothing may use the default security group.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = local.tags
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "public" {
  for_each = { for i, az in local.azs : az => i }

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = cidrsubnet(local.cidr, 8, each.value)
  tags              = merge(local.tags, { Name = "${local.name}-public-${each.key}" })
}

resource "aws_subnet" "workload" {
  for_each = { for i, az in local.azs : az => i }

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = cidrsubnet(local.cidr, 8, 10 + each.value)
  tags              = merge(local.tags, { Name = "${local.name}-workload-${each.key}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  for_each = aws_subnet.public

  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

# One route table per workload subnet: the module points its default route at the gateway of
# the same zone, so traffic never crosses zones to leave.
resource "aws_route_table" "workload" {
  for_each = aws_subnet.workload

  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-workload-${each.key}" })
}

resource "aws_route_table_association" "workload" {
  for_each = aws_subnet.workload

  subnet_id      = each.value.id
  route_table_id = aws_route_table.workload[each.key].id
}

module "bulkhead" {
  source = "../../"

  name          = local.name
  vpc_id        = aws_vpc.this.id
  ami_id        = var.ami_id
  instance_type = "c6in.large"
  ha_mode       = true

  gateways = {
    for az in local.azs : az => {
      subnet_id       = aws_subnet.public[az].id
      route_table_ids = [aws_route_table.workload[az].id]
    }
  }

  workload_cidrs        = [for s in aws_subnet.workload : s.cidr_block]
  enforcement_mode      = var.enforcement_mode
  metrics_allowed_cidrs = [local.cidr]
  log_destination       = "cloudwatch"

  # With a controller (docs/control-plane.md), for example:
  # controller_endpoint = "https://controller.internal:50051"
  # controller_tls_sources = {
  #   ca   = "ssm:/bulkhead/ca.pem"
  #   cert = "ssm:/bulkhead/{id}/gateway.pem"
  #   key  = "ssm:/bulkhead/{id}/gateway.key"
  # }

  tags = local.tags
}
