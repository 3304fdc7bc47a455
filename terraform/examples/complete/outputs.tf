output "gateway_ids" {
  description = "Gateway id of each zone."
  value       = module.bulkhead.gateway_ids
}

output "network_interface_ids" {
  description = "Static interface (route target) of each zone."
  value       = module.bulkhead.network_interface_ids
}

output "public_ips" {
  description = "The address the internet sees for each zone's workloads."
  value       = module.bulkhead.public_ips
}

output "autoscaling_group_names" {
  description = "Auto-scaling group of one of each zone."
  value       = module.bulkhead.autoscaling_group_names
}

output "log_group_name" {
  description = "CloudWatch log group of the decision records."
  value       = module.bulkhead.log_group_name
}
