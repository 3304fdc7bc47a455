variable "region" {
  description = "AWS region of the example."
  type        = string
  default     = "us-east-1"
}

variable "ami_id" {
  description = "AMI registered from image/build.sh's bulkhead.raw (see docs/deploy-aws.md)."
  type        = string
}

variable "enforcement_mode" {
  description = "log-only first; enforce once bulkheadctl report (or the decision log) shows what enforcement would stop."
  type        = string
  default     = "log-only"
}
