variable "name" {
  description = "Name prefix of every resource; each gateway's id (its SPIFFE identity and the gateway_id of its decision records) is NAME-AZ."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,60}$", var.name))
    error_message = "name must be 1-61 letters, digits, '.', '_' or '-', starting with a letter or digit."
  }
}

variable "vpc_id" {
  description = "VPC of the workloads and the gateways."
  type        = string
}

variable "gateways" {
  description = "One gateway per availability zone: AZ name -> the subnet of its static network interface (and of its instance), the route tables whose default routes point at it, and optionally the interface's private IPv4 address."
  type = map(object({
    subnet_id       = string
    route_table_ids = list(string)
    private_ip      = optional(string)
  }))

  validation {
    condition     = length(var.gateways) > 0
    error_message = "gateways must name at least one availability zone."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the gateways (x86_64; see docs/deploy-aws.md for sizing)."
  type        = string
  default     = "c6in.large"
}

variable "ami_id" {
  description = "AMI built from image/build.sh (bulkhead.raw imported as a snapshot and registered with BIOS boot)."
  type        = string
}

variable "ha_mode" {
  description = "true: each gateway is an auto-scaling group of one that re-attaches the static interface to its replacement instance. false: a plain instance with the interface attached by Terraform."
  type        = bool
  default     = true
}

variable "controller_endpoint" {
  description = "The controller's https://HOST:PORT endpoint; null runs the gateways on their local policy only."
  type        = string
  default     = null

  validation {
    condition     = var.controller_endpoint == null || can(regex("^https://[^/]+:[0-9]+$", var.controller_endpoint))
    error_message = "controller_endpoint must be https://HOST:PORT (mutual TLS is the controller's identity check; http:// is refused)."
  }
}

variable "controller_tls_sources" {
  description = "Where each gateway fetches its controller CA, certificate and key at boot: ssm:PARAMETER-NAME (SecureString for the key) or secretsmanager:SECRET-ARN. In cert and key, {id} is replaced by the gateway id. Required with controller_endpoint."
  type = object({
    ca   = string
    cert = string
    key  = string
  })
  default = null

  validation {
    condition = var.controller_tls_sources == null || alltrue([
      for s in values(var.controller_tls_sources) : can(regex("^(ssm:[A-Za-z0-9_.{}/-]+|secretsmanager:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9_+=.@{}/-]+)$", s))
    ])
    error_message = "Each source must be ssm:PARAMETER-NAME or secretsmanager:SECRET-ARN."
  }
}

variable "tls_kms_key_arns" {
  description = "KMS keys that encrypt the SSM SecureString parameters or secrets of controller_tls_sources, if customer-managed (the instance role may decrypt with them)."
  type        = list(string)
  default     = []
}

variable "enforcement_mode" {
  description = "Mode of the gateways' local policy (the image's observe-first pack): log-only decides and logs every flow and blocks nothing; enforce applies it. A controller's policy carries its own mode."
  type        = string
  default     = "log-only"

  validation {
    condition     = contains(["enforce", "log-only"], var.enforcement_mode)
    error_message = "enforcement_mode must be \"enforce\" or \"log-only\"."
  }
}

variable "workload_cidrs" {
  description = "CIDRs of the workloads behind the gateways: the security group admits their traffic, and the gateways never masquerade traffic between them."
  type        = list(string)

  validation {
    condition     = length(var.workload_cidrs) > 0 && alltrue([for c in var.workload_cidrs : can(cidrhost(c, 0))])
    error_message = "workload_cidrs must be a non-empty list of CIDRs."
  }
}

variable "ipv6_enabled" {
  description = "Also point ::/0 of the route tables at the gateways."
  type        = bool
  default     = false
}

variable "metrics_port" {
  description = "Port of the gateways' /metrics, /healthz and /readyz."
  type        = number
  default     = 9108

  validation {
    condition     = var.metrics_port >= 1024 && var.metrics_port <= 65535
    error_message = "metrics_port must be 1024-65535 (the daemon may not bind a privileged port)."
  }
}

variable "metrics_allowed_cidrs" {
  description = "CIDRs allowed to scrape the metrics port. Empty: the endpoint listens on 127.0.0.1 only."
  type        = list(string)
  default     = []
}

variable "log_destination" {
  description = "Where decision records go: file (/var/log/bulkhead/decisions.jsonl on the instance, rotated by the gateway) or cloudwatch (the same file, shipped by the CloudWatch agent to a log group this module creates)."
  type        = string
  default     = "file"

  validation {
    condition     = contains(["file", "cloudwatch"], var.log_destination)
    error_message = "log_destination must be \"file\" or \"cloudwatch\"."
  }
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group (log_destination = cloudwatch)."
  type        = number
  default     = 365
}

variable "log_kms_key_arn" {
  description = "KMS key encrypting the CloudWatch log group; null uses CloudWatch's own encryption."
  type        = string
  default     = null
}

variable "associate_public_ip" {
  description = "Give each static interface an Elastic IP (gateways in public subnets). false when the gateway subnets reach the internet through a NAT gateway."
  type        = bool
  default     = true
}

variable "primary_public_ip" {
  description = "Give the instance's boot interface a public IP, so that it reaches the AWS APIs (interface attachment, certificates, SSM) before the static interface is attached. false when the subnet has VPC endpoints or a NAT gateway for that."
  type        = bool
  default     = true
}

variable "root_volume_size" {
  description = "Root volume size in GiB (the decision log rotates within 6 x 100 MiB by default)."
  type        = number
  default     = 8
}

variable "ebs_kms_key_arn" {
  description = "KMS key of the encrypted root volume; null uses the account's default EBS key."
  type        = string
  default     = null
}

variable "root_device_name" {
  description = "Root device name the AMI was registered with."
  type        = string
  default     = "/dev/xvda"
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore to the instance role (shell access through SSM Session Manager instead of SSH) and install the SSM agent at boot if the image lacks it."
  type        = bool
  default     = true
}

variable "key_name" {
  description = "EC2 key pair for SSH; null (the default) means none. The image has no SSH server either: use SSM."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
