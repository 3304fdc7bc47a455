//! `gateway.toml`: the daemon's configuration.
//!
//! The schema is the one in the design's "Gateway configuration" section, plus optional tuning
//! keys with documented defaults (`docs/operations.md` carries the full reference). Every table
//! rejects unknown keys, so a typo is an error, not a silently ignored setting. Errors carry the
//! file, line and column: `gateway.toml:3:9: error: invalid type: string "x", expected u16`.
//!
//! Relative paths (`policy.file`, `policy.state_dir`, `log.decisions`) are resolved against the
//! directory holding the configuration file, so a configuration and its policy can travel together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod validate;

/// Default number of flows each worker's flow table holds.
pub const DEFAULT_FLOW_CAPACITY: usize = 262_144;
/// Default bound on the client bytes held per flow while its first bytes are inspected.
pub const DEFAULT_MAX_HELD_BYTES_PER_FLOW: usize = 16 * 1024;
/// Default bound on the bytes held by all flows of one worker.
pub const DEFAULT_MAX_HELD_BYTES_TOTAL: usize = 64 * 1024 * 1024;
/// Default time a flow may spend waiting for its name before it fails closed.
pub const DEFAULT_INSPECT_TIMEOUT_MS: u64 = 5_000;
/// Default size at which the decision log file is rotated.
pub const DEFAULT_LOG_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Default number of rotated decision log files kept besides the live one.
pub const DEFAULT_LOG_KEEP_FILES: u32 = 5;
/// Default capacity of the queue between the workers and the decision log writer.
pub const DEFAULT_LOG_QUEUE_CAPACITY: usize = 65_536;
/// Default metrics listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9108";
/// Default routing table holding the default routes into the TUN.
pub const DEFAULT_ROUTE_TABLE: u32 = 100;
/// Default priority of the `ip rule`s (after the local table, which sits at 0).
pub const DEFAULT_RULE_PRIORITY: u32 = 100;
/// Default busy-polling window of a worker, in microseconds: long enough to span the round
/// trip of a request and its answer through the gateway, so an interactive exchange does not
/// pay a thread wake-up per packet.
pub const DEFAULT_BUSY_POLL_US: u32 = 200;
/// Upper bound of `gateway.busy_poll_us`: a worker that spins longer than this after the last
/// packet spends its CPU on nothing.
pub const MAX_BUSY_POLL_US: u32 = 10_000;
/// Default bound on one policy load or reload, in milliseconds.
pub const DEFAULT_LOAD_TIMEOUT_MS: u64 = 60_000;
/// Largest configuration file read: a real one is a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Default MTU of the TUN when none of the listed interfaces can be read.
pub const DEFAULT_MTU: u32 = 1500;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewaySection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub controller: Option<ControllerSection>,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub dns: DnsSection,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Appears in every decision record.
    pub id: String,
    /// Name of the TUN device the gateway creates.
    #[serde(default = "default_tun")]
    pub tun: String,
    /// Take over an existing TUN device of that name (a persistent one) instead of refusing to
    /// start. A device that another process holds a queue of is refused either way.
    #[serde(default)]
    pub adopt_existing_tun: bool,
    /// TUN queues, one worker thread each. Default: the number of CPUs.
    #[serde(default)]
    pub queues: Option<u16>,
    /// Interfaces whose forwarded traffic is diverted through the TUN.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Install (and remove on exit) the ip rules, routes and sysctls.
    #[serde(default)]
    pub manage_routing: bool,
    /// MTU of the TUN. Default: the largest MTU of the listed interfaces (1500 if none).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Routing table whose default routes point at the TUN.
    #[serde(default = "default_route_table")]
    pub route_table: u32,
    /// Priority of the diversion rules.
    #[serde(default = "default_rule_priority")]
    pub rule_priority: u32,
    /// Microseconds a worker keeps reading its queue after the last packet before it sleeps:
    /// lower latency for traffic that comes in bursts, at the price of CPU while it spins.
    /// 0 disables busy polling.
    #[serde(default = "default_busy_poll_us")]
    pub busy_poll_us: u32,
    /// Hand decided TCP flows to the kernel (conntrack mark, nftables), so their packets stop
    /// crossing the TUN. Takes effect with `manage_routing` on a kernel that supports it.
    #[serde(default = "default_fast_path")]
    pub fast_path: bool,
    /// The one bit of the conntrack and packet marks the fast path uses.
    #[serde(default = "default_fast_path_mark")]
    pub fast_path_mark: u32,
}

/// `[policy]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Local policy file. Without one (and without a snapshot) the gateway denies everything.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Where the routing state file and the last-known-good snapshot live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Bound on one load or reload of the policy (read, validate, compile), in milliseconds.
    #[serde(default = "default_load_timeout_ms")]
    pub load_timeout_ms: u64,
}

impl PolicySection {
    pub fn load_timeout(&self) -> Duration {
        Duration::from_millis(self.load_timeout_ms)
    }
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            file: None,
            state_dir: default_state_dir(),
            load_timeout_ms: DEFAULT_LOAD_TIMEOUT_MS,
        }
    }
}

/// `[controller]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    pub endpoint: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[limits]`: the pipeline's bounds, per worker.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default = "default_flow_capacity")]
    pub flow_capacity: usize,
    #[serde(default = "default_max_held_bytes_per_flow")]
    pub max_held_bytes_per_flow: usize,
    #[serde(default = "default_max_held_bytes_total")]
    pub max_held_bytes_total: usize,
    #[serde(default = "default_inspect_timeout_ms")]
    pub inspect_timeout_ms: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            flow_capacity: DEFAULT_FLOW_CAPACITY,
            max_held_bytes_per_flow: DEFAULT_MAX_HELD_BYTES_PER_FLOW,
            max_held_bytes_total: DEFAULT_MAX_HELD_BYTES_TOTAL,
            inspect_timeout_ms: DEFAULT_INSPECT_TIMEOUT_MS,
        }
    }
}

impl LimitsSection {
    pub fn inspect_timeout(&self) -> Duration {
        Duration::from_millis(self.inspect_timeout_ms)
    }
}

/// `[timeouts]`: idle timeouts of flows by state, in milliseconds. Unset keys keep the
/// pipeline's defaults (see `docs/operations.md`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    /// TCP flows whose handshake has not completed (half-open: what a SYN flood creates).
    pub tcp_opening_ms: Option<u64>,
    pub tcp_established_ms: Option<u64>,
    /// After the first FIN.
    pub tcp_closing_ms: Option<u64>,
    /// After both FINs or a RST.
    pub tcp_closed_ms: Option<u64>,
    pub udp_ms: Option<u64>,
    /// Other IP protocols (ICMP, ...).
    pub other_ms: Option<u64>,
}

impl TimeoutsSection {
    fn entries(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("tcp_opening_ms", self.tcp_opening_ms),
            ("tcp_established_ms", self.tcp_established_ms),
            ("tcp_closing_ms", self.tcp_closing_ms),
            ("tcp_closed_ms", self.tcp_closed_ms),
            ("udp_ms", self.udp_ms),
            ("other_ms", self.other_ms),
        ]
    }

    /// The pipeline's idle timeouts with the configured ones applied.
    pub fn apply(&self, mut idle: crate::pipeline::IdleTimeouts) -> crate::pipeline::IdleTimeouts {
        let set = |d: &mut Duration, v: Option<u64>| {
            if let Some(ms) = v {
                *d = Duration::from_millis(ms);
            }
        };
        set(&mut idle.tcp_opening, self.tcp_opening_ms);
        set(&mut idle.tcp_established, self.tcp_established_ms);
        set(&mut idle.tcp_closing, self.tcp_closing_ms);
        set(&mut idle.tcp_closed, self.tcp_closed_ms);
        set(&mut idle.udp, self.udp_ms);
        set(&mut idle.other, self.other_ms);
        idle
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// JSON-lines file for decision records, or `-` for standard output.
    #[serde(default = "default_decisions")]
    pub decisions: PathBuf,
    /// Rotate the file when it would grow past this size.
    #[serde(default = "default_log_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept (`decisions.jsonl.1` is the newest).
    #[serde(default = "default_log_keep_files")]
    pub keep_files: u32,
    /// Records queued between the workers and the writer; beyond it records are dropped and
    /// counted.
    #[serde(default = "default_log_queue_capacity")]
    pub queue_capacity: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            decisions: default_decisions(),
            max_file_bytes: DEFAULT_LOG_MAX_FILE_BYTES,
            keep_files: DEFAULT_LOG_KEEP_FILES,
            queue_capacity: DEFAULT_LOG_QUEUE_CAPACITY,
        }
    }
}

impl LogSection {
    /// True when decision records go to standard output.
    pub fn to_stdout(&self) -> bool {
        self.decisions.as_os_str() == "-"
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    #[serde(default = "default_metrics_enabled")]
    pub enabled: bool,
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

/// `[dns]`: the resolvers and bounds of the DNS check of names (policy `sni_dns_check`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Resolvers the gateway asks, `"IP"` or `"IP:PORT"` (`"[IPv6]:PORT"`); empty: the
    /// system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Resolvers whose answers to workloads' queries crossing the gateway may be learned,
    /// `"IP"`; unset: the addresses of `servers`. `[]` learns nothing.
    #[serde(default)]
    pub learn_from: Option<Vec<String>>,
    /// Most names in the cache the workers share.
    #[serde(default = "default_dns_cache_size")]
    pub cache_size: usize,
    /// An answer is kept at least this long (seconds), whatever its TTL.
    #[serde(default = "default_dns_min_ttl")]
    pub min_ttl_s: u32,
    /// And at most this long.
    #[serde(default = "default_dns_max_ttl")]
    pub max_ttl_s: u32,
    /// Time for one attempt of a lookup (milliseconds).
    #[serde(default = "default_dns_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per resolver.
    #[serde(default = "default_dns_attempts")]
    pub attempts: u32,
    /// Most lookups under way at once; past it a name is refused (its flow fails closed
    /// under `enforce`).
    #[serde(default = "default_dns_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            servers: Vec::new(),
            learn_from: None,
            cache_size: default_dns_cache_size(),
            min_ttl_s: default_dns_min_ttl(),
            max_ttl_s: default_dns_max_ttl(),
            timeout_ms: default_dns_timeout_ms(),
            attempts: default_dns_attempts(),
            max_in_flight: default_dns_max_in_flight(),
        }
    }
}

fn default_dns_cache_size() -> usize {
    16_384
}
fn default_dns_min_ttl() -> u32 {
    5
}
fn default_dns_max_ttl() -> u32 {
    300
}
fn default_dns_timeout_ms() -> u64 {
    1500
}
fn default_dns_attempts() -> u32 {
    2
}
fn default_dns_max_in_flight() -> usize {
    256
}

impl DnsSection {
    /// The resolvers as socket addresses (port 53 when none is given); `Err` with the
    /// entry that is not one.
    pub fn server_addrs(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        self.servers
            .iter()
            .map(|s| {
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| s.clone())
            })
            .collect()
    }

    /// The resolvers answers may be learned from.
    pub fn learn_addrs(&self) -> Result<Vec<std::net::IpAddr>, String> {
        match &self.learn_from {
            Some(list) => list
                .iter()
                .map(|s| s.parse::<std::net::IpAddr>().map_err(|_| s.clone()))
                .collect(),
            None => Ok(self.server_addrs()?.iter().map(|a| a.ip()).collect()),
        }
    }

    /// The cache's bounds.
    pub fn cache_config(&self) -> crate::dns::CacheConfig {
        let min = Duration::from_secs(u64::from(self.min_ttl_s));
        let max = Duration::from_secs(u64::from(self.max_ttl_s));
        crate::dns::CacheConfig {
            capacity: self.cache_size,
            min_ttl: min,
            max_ttl: max,
            negative_ttl: Duration::from_secs(30).clamp(min, max.max(min)),
        }
    }

    /// The resolver thread's settings (the servers must have validated).
    pub fn resolver_settings(&self) -> crate::dns::resolver::ResolverSettings {
        crate::dns::resolver::ResolverSettings {
            servers: self.server_addrs().unwrap_or_default(),
            timeout: Duration::from_millis(self.timeout_ms),
            attempts: self.attempts as usize,
            max_in_flight: self.max_in_flight,
            ..Default::default()
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

fn default_tun() -> String {
    "bulk0".to_owned()
}
fn default_route_table() -> u32 {
    DEFAULT_ROUTE_TABLE
}
fn default_rule_priority() -> u32 {
    DEFAULT_RULE_PRIORITY
}
fn default_busy_poll_us() -> u32 {
    DEFAULT_BUSY_POLL_US
}
fn default_fast_path() -> bool {
    true
}
fn default_fast_path_mark() -> u32 {
    crate::fastpath::DEFAULT_MARK
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/bulkhead")
}
fn default_load_timeout_ms() -> u64 {
    DEFAULT_LOAD_TIMEOUT_MS
}
fn default_flow_capacity() -> usize {
    DEFAULT_FLOW_CAPACITY
}
fn default_max_held_bytes_per_flow() -> usize {
    DEFAULT_MAX_HELD_BYTES_PER_FLOW
}
fn default_max_held_bytes_total() -> usize {
    DEFAULT_MAX_HELD_BYTES_TOTAL
}
fn default_inspect_timeout_ms() -> u64 {
    DEFAULT_INSPECT_TIMEOUT_MS
}
fn default_decisions() -> PathBuf {
    PathBuf::from("/var/log/bulkhead/decisions.jsonl")
}
fn default_log_max_file_bytes() -> u64 {
    DEFAULT_LOG_MAX_FILE_BYTES
}
fn default_log_keep_files() -> u32 {
    DEFAULT_LOG_KEEP_FILES
}
fn default_log_queue_capacity() -> usize {
    DEFAULT_LOG_QUEUE_CAPACITY
}
fn default_metrics_enabled() -> bool {
    true
}
fn default_metrics_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN
        .parse()
        .expect("constant address parses")
}

/// A configuration that cannot be used. Display: `FILE:LINE:COL: error: MESSAGE` for syntax and
/// type errors, `FILE: error: MESSAGE` for each semantic one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: error: cannot read: {source}", crate::input::echo_path(.path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: error: {message}", crate::input::echo_path(.path))]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", invalid_list(.path, .errors))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

fn invalid_list(path: &Path, errors: &[String]) -> String {
    let lines: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: error: {e}", crate::input::echo_path(path)))
        .collect();
    lines.join("\n")
}

impl Config {
    /// Reads, parses and validates a configuration file. Only a regular file of at most
    /// [`MAX_CONFIG_BYTES`] is read: a FIFO would block start-up, a device would never end.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::input::read_regular_text(path, MAX_CONFIG_BYTES).map_err(|source| {
            ConfigError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors relative
    /// paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => line_col(text, span.start),
                None => (1, 1),
            };
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                // The parser quotes keys and values from the file: bounded and escaped.
                message: crate::input::echo_bounded(
                    e.message().trim(),
                    crate::input::MAX_ECHO_MESSAGE_CHARS,
                ),
            }
        })?;
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                errors,
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Every semantic error at once, section by section in file order.
    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        self.gateway.validate(&mut errors);
        self.policy.validate(&mut errors);
        if let Some(c) = &self.controller {
            c.validate(&mut errors);
        }
        self.limits.validate(&mut errors);
        self.timeouts.validate(&mut errors);
        self.log.validate(&mut errors);
        self.dns.validate(&mut errors);
        errors
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(f) = self.policy.file.as_mut() {
            resolve(f);
        }
        resolve(&mut self.policy.state_dir);
        if !self.log.to_stdout() {
            resolve(&mut self.log.decisions);
        }
        if let Some(c) = self.controller.as_mut() {
            resolve(&mut c.ca);
            resolve(&mut c.cert);
            resolve(&mut c.key);
        }
    }

    /// The number of workers: `gateway.queues`, else one per CPU.
    pub fn queues(&self) -> u16 {
        match self.gateway.queues {
            Some(q) => q,
            None => std::thread::available_parallelism()
                .map(|n| n.get().min(256) as u16)
                .unwrap_or(1),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/bulkhead/gateway.toml"))
    }

    #[test]
    fn design_example_parses_with_paths_kept() {
        let c = parse(
            r#"
[gateway]
id = "spoke-use1-a"
tun = "bulk0"
queues = 2
interfaces = ["eth0"]
manage_routing = true

[policy]
file = "/etc/bulkhead/policy.toml"
state_dir = "/var/lib/bulkhead"

[controller]
endpoint = "https://controller.internal:50051"
ca = "/etc/bulkhead/ca.pem"
cert = "/etc/bulkhead/gateway.pem"
key = "/etc/bulkhead/gateway.key"

[log]
decisions = "/var/log/bulkhead/decisions.jsonl"

[metrics]
listen = "127.0.0.1:9108"
"#,
        )
        .unwrap();
        assert_eq!(c.gateway.id, "spoke-use1-a");
        assert_eq!(c.queues(), 2);
        assert_eq!(c.gateway.interfaces, vec!["eth0".to_owned()]);
        assert!(c.gateway.manage_routing);
        assert_eq!(
            c.policy.file.as_deref(),
            Some(Path::new("/etc/bulkhead/policy.toml"))
        );
        assert_eq!(
            c.controller.as_ref().unwrap().endpoint,
            "https://controller.internal:50051"
        );
        assert_eq!(c.metrics.listen, "127.0.0.1:9108".parse().unwrap());
        assert_eq!(c.limits, LimitsSection::default());
    }

    #[test]
    fn defaults_apply_and_relative_paths_follow_the_file() {
        let c = parse(
            "[gateway]\nid = \"g\"\n[policy]\nfile = \"policy.toml\"\nstate_dir = \"state\"\n\
             [log]\ndecisions = \"logs/d.jsonl\"\n",
        )
        .unwrap();
        assert_eq!(c.gateway.tun, "bulk0");
        assert!(!c.gateway.manage_routing);
        assert_eq!(c.gateway.route_table, DEFAULT_ROUTE_TABLE);
        assert_eq!(c.gateway.rule_priority, DEFAULT_RULE_PRIORITY);
        assert_eq!(c.gateway.busy_poll_us, DEFAULT_BUSY_POLL_US);
        assert!(c.gateway.fast_path, "the fast path is on by default");
        assert_eq!(c.gateway.fast_path_mark, crate::fastpath::DEFAULT_MARK);
        assert!(c.queues() >= 1);
        assert_eq!(
            c.policy.file.unwrap(),
            Path::new("/etc/bulkhead/policy.toml")
        );
        assert_eq!(c.policy.state_dir, Path::new("/etc/bulkhead/state"));
        assert_eq!(c.log.decisions, Path::new("/etc/bulkhead/logs/d.jsonl"));
        assert_eq!(c.log.keep_files, DEFAULT_LOG_KEEP_FILES);
        assert_eq!(c.limits.inspect_timeout(), Duration::from_secs(5));
        assert!(c.metrics.enabled);
    }

    #[test]
    fn stdout_sink_is_not_resolved() {
        let c = parse("[gateway]\nid = \"g\"\n[log]\ndecisions = \"-\"\n").unwrap();
        assert!(c.log.to_stdout());
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let err = parse("[gateway]\nid = \"g\"\nqueus = 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/bulkhead/gateway.toml:3:1: error: "),
            "{msg}"
        );
        assert!(msg.contains("queus"), "{msg}");
    }

    #[test]
    fn wrong_type_is_reported_with_line_and_column() {
        let err = parse("[gateway]\nid = \"g\"\nqueues = \"two\"\n").unwrap_err();
        match err {
            ConfigError::Syntax { line, column, .. } => assert_eq!((line, column), (3, 10)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_section_and_missing_id_are_errors() {
        assert!(matches!(
            parse("[gateway]\nid = \"g\"\n[gatway]\n").unwrap_err(),
            ConfigError::Syntax { line: 3, .. }
        ));
        let msg = parse("[gateway]\ntun = \"bulk0\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing field `id`"), "{msg}");
    }

    #[test]
    fn bad_metrics_address_is_a_syntax_error() {
        let msg = parse("[gateway]\nid = \"g\"\n[metrics]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(":4:10: error: "), "{msg}");
    }

    #[test]
    fn the_fast_path_switch_and_its_mark() {
        let c = parse("[gateway]\nid = \"g\"\nfast_path = false\nfast_path_mark = 0x10\n").unwrap();
        assert!(!c.gateway.fast_path);
        assert_eq!(c.gateway.fast_path_mark, 0x10);
        for bad in ["0", "0x30", "0xffffffff"] {
            let err = parse(&format!("[gateway]\nid = \"g\"\nfast_path_mark = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("gateway.fast_path_mark") && err.contains("one bit"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_semantic_error_is_reported_at_once() {
        let err = parse(
            "[gateway]\nid = \"\"\ntun = \"a/b\"\nqueues = 0\nmanage_routing = true\n\
             route_table = 254\nrule_priority = 0\nbusy_poll_us = 10001\n[limits]\nflow_capacity = 0\n\
             [log]\nkeep_files = 0\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { errors, .. } = &err else {
            panic!("{err:?}")
        };
        let text = err.to_string();
        for needle in [
            "gateway.id",
            "gateway.tun",
            "gateway.queues",
            "manage_routing",
            "route_table",
            "rule_priority",
            "busy_poll_us",
            "flow_capacity",
            "keep_files",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
        assert_eq!(errors.len(), 9);
        assert!(text
            .lines()
            .all(|l| l.starts_with("/etc/bulkhead/gateway.toml: error: ")));
    }

    #[test]
    fn interface_list_is_checked() {
        let text = parse(
            "[gateway]\nid = \"g\"\ninterfaces = [\"eth0\", \"eth0\", \"averyveryverylongname\", \
             \"bulk0\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("listed twice"), "{text}");
        assert!(text.contains("1 to 15"), "{text}");
        assert!(text.contains("own TUN"), "{text}");
    }

    #[test]
    fn timeouts_override_only_what_is_set() {
        let c = parse("[gateway]\nid = \"g\"\n[timeouts]\ntcp_opening_ms = 5000\n").unwrap();
        let base = crate::pipeline::IdleTimeouts::default();
        let idle = c.timeouts.apply(base);
        assert_eq!(idle.tcp_opening, Duration::from_secs(5));
        assert_eq!(idle.tcp_established, base.tcp_established);
        let msg = parse("[gateway]\nid = \"g\"\n[timeouts]\nudp_ms = 1\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("timeouts.udp_ms"), "{msg}");
        let msg = parse("[gateway]\nid = \"g\"\n[timeouts]\ntcp_ms = 1\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("tcp_ms"), "{msg}");
    }

    #[test]
    fn shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/gateway.example.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.gateway.id, "spoke-use1-a");
        assert!(c.gateway.manage_routing);
        assert_eq!(c.limits, LimitsSection::default());
        assert_eq!(c.log.keep_files, DEFAULT_LOG_KEEP_FILES);
    }

    #[test]
    fn controller_endpoint_must_be_https() {
        let base = "[gateway]\nid = \"g\"\n[controller]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        for bad in [
            "http://c:50051",
            "c:50051",
            "https://",
            "https://c:1/x",
            "HTTP://c",
        ] {
            let msg = parse(&format!("{base}endpoint = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains("controller.endpoint"), "{bad}: {msg}");
        }
        assert!(parse(&format!("{base}endpoint = \"https://c.internal:50051\"\n")).is_ok());
    }

    #[test]
    fn echoed_values_are_escaped_and_bounded() {
        let long = "x".repeat(5000);
        let text =
            format!("[gateway]\nid = \"g\"\ninterfaces = [\"{long}\", \"a\\nb: error: forged\"]\n");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.len() < 1000, "{} bytes", msg.len());
        assert_eq!(msg.lines().count(), 2, "{msg}");
        assert!(msg.contains("a\\nb"), "{msg}");
        let key = "k".repeat(5000);
        let msg = parse(&format!("[gateway]\nid = \"g\"\n{key} = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 1000, "{} bytes", msg.len());
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("abc", 99), (1, 4));
    }
}
