output "gateway_ids" {
  description = "Gateway id of each availability zone (its [gateway] id, certificate identity and the gateway_id of its decision records)."
  value       = local.gateway_ids
}

output "network_interface_ids" {
  description = "Static network interface of each availability zone: the target of the route tables' default routes."
  value       = { for az, eni in aws_network_interface.this : az => eni.id }
}

output "network_interface_private_ips" {
  description = "Private IPv4 address of each static interface."
  value       = { for az, eni in aws_network_interface.this : az => eni.private_ip }
}

output "public_ips" {
  description = "Elastic IP of each static interface (associate_public_ip): the address the internet sees for the workloads of that zone."
  value       = { for az, eip in aws_eip.this : az => eip.public_ip }
}

output "security_group_id" {
  description = "Security group of the gateways."
  value       = aws_security_group.this.id
}

output "autoscaling_group_names" {
  description = "Auto-scaling group of one of each availability zone (ha_mode = true; empty otherwise)."
  value       = { for az, asg in aws_autoscaling_group.this : az => asg.name }
}

output "instance_ids" {
  description = "Instance of each availability zone (ha_mode = false; empty otherwise: the auto-scaling groups own the instances)."
  value       = { for az, i in aws_instance.this : az => i.id }
}

output "launch_template_ids" {
  description = "Launch template of each availability zone."
  value       = { for az, lt in aws_launch_template.this : az => lt.id }
}

output "launch_template_latest_versions" {
  description = "Latest version of each launch template (a new AMI or setting makes a new one)."
  value       = { for az, lt in aws_launch_template.this : az => lt.latest_version }
}

output "iam_role_arn" {
  description = "ARN of the gateways' instance role."
  value       = aws_iam_role.this.arn
}

output "iam_instance_profile_arn" {
  description = "ARN of the gateways' instance profile."
  value       = aws_iam_instance_profile.this.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the decision records (log_destination = cloudwatch; null otherwise)."
  value       = var.log_destination == "cloudwatch" ? aws_cloudwatch_log_group.this[0].name : null
}
