//! Semantic checks of a parsed `gateway.toml`, one function per section. Each pushes every
//! error it finds (`section.key = value: what is wrong`), so the operator sees them all at once;
//! `Config::validate` calls them in file order.

use crate::input::echo;

use super::{
    ControllerSection, DnsSection, GatewaySection, LimitsSection, LogSection, PolicySection,
    TimeoutsSection, MAX_BUSY_POLL_US,
};

impl GatewaySection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        self.validate_identity(errors);
        self.validate_interfaces(errors);
        self.validate_routing(errors);
    }

    /// `id`, `tun`, `queues`.
    fn validate_identity(&self, errors: &mut Vec<String>) {
        if self.id.trim().is_empty() {
            errors.push("gateway.id must not be empty".to_owned());
        } else if self.id.len() > 128 || self.id.chars().any(|c| c.is_control()) {
            errors.push("gateway.id must be at most 128 printable characters".to_owned());
        }
        if let Err(msg) = check_ifname(&self.tun) {
            errors.push(format!("gateway.tun \"{}\": {msg}", echo(&self.tun)));
        }
        if let Some(q) = self.queues {
            if q == 0 || q > 256 {
                errors.push(format!("gateway.queues = {q}: must be between 1 and 256"));
            }
        }
    }

    /// `interfaces`: valid names, not the TUN, no duplicates, present when routing is managed.
    fn validate_interfaces(&self, errors: &mut Vec<String>) {
        for name in &self.interfaces {
            if let Err(msg) = check_ifname(name) {
                errors.push(format!("gateway.interfaces: \"{}\": {msg}", echo(name)));
            } else if name == &self.tun {
                errors.push(format!(
                    "gateway.interfaces: \"{}\" is the gateway's own TUN",
                    echo(name)
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.interfaces {
            if !seen.insert(name) {
                errors.push(format!(
                    "gateway.interfaces: \"{}\" is listed twice",
                    echo(name)
                ));
            }
        }
        if self.manage_routing && self.interfaces.is_empty() {
            errors.push(
                "gateway.manage_routing = true needs at least one entry in gateway.interfaces"
                    .to_owned(),
            );
        }
    }

    /// `mtu`, `route_table`, `rule_priority`, `busy_poll_us`.
    fn validate_routing(&self, errors: &mut Vec<String>) {
        if let Some(mtu) = self.mtu {
            if !(1280..=65535).contains(&mtu) {
                errors.push(format!(
                    "gateway.mtu = {mtu}: must be between 1280 and 65535"
                ));
            }
        }
        // 0 is unspecified; 253, 254 and 255 are the kernel's default, main and local tables.
        if matches!(self.route_table, 0 | 253 | 254 | 255) {
            errors.push(format!(
                "gateway.route_table = {}: 0, 253 (default), 254 (main) and 255 (local) are reserved",
                self.route_table
            ));
        }
        // Priority 0 is the local table's; 32766 and 32767 hold the main and default lookups.
        // P - 1 holds the link-local bypass rules.
        if self.rule_priority < 2 || self.rule_priority >= 32766 {
            errors.push(format!(
                "gateway.rule_priority = {}: must be between 2 and 32765 (after the local table, \
                 before main; the priority just before it holds the link-local bypass rules)",
                self.rule_priority
            ));
        }
        if self.busy_poll_us > MAX_BUSY_POLL_US {
            errors.push(format!(
                "gateway.busy_poll_us = {}: must be at most {MAX_BUSY_POLL_US} (0 disables busy polling)",
                self.busy_poll_us
            ));
        }
        if self.fast_path_mark.count_ones() != 1 {
            errors.push(format!(
                "gateway.fast_path_mark = {:#x}: must be exactly one bit (e.g. 0x1000000)",
                self.fast_path_mark
            ));
        }
    }
}

impl PolicySection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if self.state_dir.as_os_str().is_empty() {
            errors.push("policy.state_dir must not be empty".to_owned());
        }
        if !(100..=600_000).contains(&self.load_timeout_ms) {
            errors.push(format!(
                "policy.load_timeout_ms = {}: must be between 100 and 600000",
                self.load_timeout_ms
            ));
        }
        if let Some(file) = &self.file {
            if file.as_os_str().is_empty() {
                errors
                    .push("policy.file must not be empty (omit it to start with deny-all)".into());
            }
        }
    }
}

impl ControllerSection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        // Mutual TLS is the controller's only identity check: a plain-text endpoint would
        // hand the policy channel to anyone on the path, so it is refused, not downgraded.
        let authority = self.endpoint.strip_prefix("https://").unwrap_or("");
        let host = authority.strip_suffix('/').unwrap_or(authority);
        if host.is_empty()
            || host.contains(['/', '?', '#', '@'])
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(format!(
                "controller.endpoint \"{}\": must be an https:// URL with a host and no path \
                 (https://HOST:PORT); plain http:// is refused",
                echo(&self.endpoint)
            ));
        }
    }
}

impl LimitsSection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if self.flow_capacity == 0 || self.flow_capacity > 64 * 1024 * 1024 {
            errors.push(format!(
                "limits.flow_capacity = {}: must be between 1 and 67108864",
                self.flow_capacity
            ));
        }
        if self.max_held_bytes_per_flow < 1024 {
            errors.push(format!(
                "limits.max_held_bytes_per_flow = {}: must be at least 1024 (a ClientHello \
                 does not fit otherwise)",
                self.max_held_bytes_per_flow
            ));
        }
        if self.max_held_bytes_total < self.max_held_bytes_per_flow {
            errors.push(format!(
                "limits.max_held_bytes_total = {}: must be at least limits.max_held_bytes_per_flow",
                self.max_held_bytes_total
            ));
        }
        if self.inspect_timeout_ms == 0 || self.inspect_timeout_ms > 600_000 {
            errors.push(format!(
                "limits.inspect_timeout_ms = {}: must be between 1 and 600000",
                self.inspect_timeout_ms
            ));
        }
    }
}

impl TimeoutsSection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        for (key, v) in self.entries() {
            if let Some(ms) = v {
                if !(100..=7 * 24 * 3600 * 1000).contains(&ms) {
                    errors.push(format!(
                        "timeouts.{key} = {ms}: must be between 100 and 604800000 (7 days)"
                    ));
                }
            }
        }
    }
}

impl LogSection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if self.decisions.as_os_str().is_empty() {
            errors.push("log.decisions must not be empty (use \"-\" for stdout)".to_owned());
        }
        if self.max_file_bytes < 4096 {
            errors.push(format!(
                "log.max_file_bytes = {}: must be at least 4096",
                self.max_file_bytes
            ));
        }
        if self.keep_files == 0 || self.keep_files > 1000 {
            errors.push(format!(
                "log.keep_files = {}: must be between 1 and 1000",
                self.keep_files
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > 16 * 1024 * 1024 {
            errors.push(format!(
                "log.queue_capacity = {}: must be between 1 and 16777216",
                self.queue_capacity
            ));
        }
    }
}

fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("an interface name has 1 to 15 characters");
    }
    if name == "." || name == ".." {
        return Err("not a valid interface name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("an interface name has no '/', ':' or whitespace");
    }
    Ok(())
}

impl DnsSection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if let Err(bad) = self.server_addrs() {
            errors.push(format!(
                "dns.servers: \"{}\" is not an address (IP or IP:PORT)",
                echo(&bad)
            ));
        }
        if self.servers.len() > 16 {
            errors.push("dns.servers: at most 16 resolvers".to_owned());
        }
        if let Some(list) = &self.learn_from {
            for s in list {
                if s.parse::<std::net::IpAddr>().is_err() {
                    errors.push(format!(
                        "dns.learn_from: \"{}\" is not an IP address",
                        echo(s)
                    ));
                }
            }
        }
        if self.cache_size == 0 || self.cache_size > 16_777_216 {
            errors.push(format!(
                "dns.cache_size = {}: must be between 1 and 16777216",
                self.cache_size
            ));
        }
        if self.max_ttl_s == 0 || self.max_ttl_s > 86_400 {
            errors.push(format!(
                "dns.max_ttl_s = {}: must be between 1 and 86400",
                self.max_ttl_s
            ));
        }
        if self.min_ttl_s > self.max_ttl_s {
            errors.push(format!(
                "dns.min_ttl_s = {}: must not exceed dns.max_ttl_s ({})",
                self.min_ttl_s, self.max_ttl_s
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            errors.push(format!(
                "dns.timeout_ms = {}: must be between 1 and 60000",
                self.timeout_ms
            ));
        }
        if self.attempts == 0 || self.attempts > 10 {
            errors.push(format!(
                "dns.attempts = {}: must be between 1 and 10",
                self.attempts
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 65_536 {
            errors.push(format!(
                "dns.max_in_flight = {}: must be between 1 and 65536",
                self.max_in_flight
            ));
        }
    }
}
