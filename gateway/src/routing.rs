//! Host routing for `manage_routing = true`: divert the forwarded traffic of the listed
//! interfaces through the TUN, and undo it on exit (or, after a crash, on the next start).
//!
//! What is installed, in this order (teardown runs it backwards):
//!
//! 1. sysctls (written under `/proc/sys`, the previous value remembered and restored):
//!    `net.ipv4.conf.{all,TUN,IFACE...}.rp_filter = 0` (the effective value is the maximum of
//!    `all` and the device's, so both must be 0: packets re-injected through the TUN arrive on an
//!    interface that is not their reverse path), `net.ipv4.conf.TUN.accept_local = 1` (a workload
//!    on the gateway host itself has a local source address), `net.ipv4.ip_forward = 1`,
//!    `net.ipv6.conf.all.forwarding = 1`.
//! 2. in table `T` (v4 and v6): `default dev TUN` and a `blackhole default` with the highest
//!    metric. The blackhole survives the TUN: if the daemon dies, diverted traffic is dropped
//!    rather than forwarded uninspected (fail closed) until the next start cleans up.
//! 3. for each interface (v4 and v6): `ip rule add iif IFACE lookup T priority P`. The local
//!    table (priority 0) is consulted first, so traffic to the gateway itself is never diverted.
//!
//! Everything is done with the `ip` command (iproute2) and `/proc/sys` writes: the commands the
//! operator would type, which `docs/operations.md` lists. Before each change the state file
//! (`STATE_DIR/routing-state.json`) is rewritten to include it, so a crash at any point leaves a
//! record of exactly what to remove.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Name of the state file under `policy.state_dir`.
pub const STATE_FILE: &str = "routing-state.json";
/// Metric of the fail-closed blackhole routes (the largest there is).
pub const BLACKHOLE_METRIC: u32 = u32::MAX;

/// IP family of a rule or route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// What the gateway should install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingPlan {
    pub tun: String,
    pub interfaces: Vec<String>,
    pub table: u32,
    pub priority: u32,
}

/// One installed item, as remembered in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// A sysctl, by its path under `/proc/sys`, with the value it had before.
    Sysctl {
        path: String,
        previous: String,
        value: String,
    },
    /// A route in the gateway's table.
    Route {
        family: Family,
        table: u32,
        route: RouteKind,
    },
    /// A diversion rule.
    Rule {
        family: Family,
        iif: String,
        table: u32,
        priority: u32,
    },
}

/// The routes in the gateway's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouteKind {
    DefaultDev { dev: String },
    Blackhole,
}

impl Item {
    /// `ip` arguments that install a route or rule (None for sysctls).
    pub fn add_args(&self) -> Option<Vec<String>> {
        match self {
            Item::Sysctl { .. } => None,
            Item::Route {
                family,
                table,
                route,
            } => {
                let mut a = vec![family.flag().to_owned(), "route".into(), "replace".into()];
                a.extend(route_spec(*table, route));
                Some(a)
            }
            Item::Rule {
                family,
                iif,
                table,
                priority,
            } => Some(
                [family.flag(), "rule", "add"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(rule_spec(iif, *table, *priority))
                    .collect(),
            ),
        }
    }

    /// `ip` arguments that remove it (None for sysctls).
    pub fn del_args(&self) -> Option<Vec<String>> {
        match self {
            Item::Sysctl { .. } => None,
            Item::Route {
                family,
                table,
                route,
            } => {
                let mut a = vec![family.flag().to_owned(), "route".into(), "del".into()];
                a.extend(route_spec(*table, route));
                Some(a)
            }
            Item::Rule {
                family,
                iif,
                table,
                priority,
            } => Some(
                [family.flag(), "rule", "del"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(rule_spec(iif, *table, *priority))
                    .collect(),
            ),
        }
    }
}

fn route_spec(table: u32, route: &RouteKind) -> Vec<String> {
    match route {
        RouteKind::DefaultDev { dev } => {
            vec![
                "default".into(),
                "dev".into(),
                dev.clone(),
                "table".into(),
                table.to_string(),
            ]
        }
        RouteKind::Blackhole => vec![
            "blackhole".into(),
            "default".into(),
            "table".into(),
            table.to_string(),
            "metric".into(),
            BLACKHOLE_METRIC.to_string(),
        ],
    }
}

fn rule_spec(iif: &str, table: u32, priority: u32) -> Vec<String> {
    vec![
        "iif".into(),
        iif.to_owned(),
        "lookup".into(),
        table.to_string(),
        "priority".into(),
        priority.to_string(),
    ]
}

/// The sysctls the plan sets: (path under /proc/sys, value).
pub fn plan_sysctls(plan: &RoutingPlan) -> Vec<(String, String)> {
    let mut out = vec![("net/ipv4/conf/all/rp_filter".to_owned(), "0".to_owned())];
    out.push((format!("net/ipv4/conf/{}/rp_filter", plan.tun), "0".into()));
    for iface in &plan.interfaces {
        out.push((format!("net/ipv4/conf/{iface}/rp_filter"), "0".into()));
    }
    out.push((
        format!("net/ipv4/conf/{}/accept_local", plan.tun),
        "1".into(),
    ));
    out.push(("net/ipv4/ip_forward".into(), "1".into()));
    out.push(("net/ipv6/conf/all/forwarding".into(), "1".into()));
    out
}

/// Routes and rules the plan installs, in order (sysctls come first, separately).
pub fn plan_items(plan: &RoutingPlan) -> Vec<Item> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        out.push(Item::Route {
            family,
            table: plan.table,
            route: RouteKind::Blackhole,
        });
        out.push(Item::Route {
            family,
            table: plan.table,
            route: RouteKind::DefaultDev {
                dev: plan.tun.clone(),
            },
        });
    }
    for iface in &plan.interfaces {
        for family in [Family::V4, Family::V6] {
            out.push(Item::Rule {
                family,
                iif: iface.clone(),
                table: plan.table,
                priority: plan.priority,
            });
        }
    }
    out
}

/// The equivalent shell commands of a plan, for documentation and `--dry-run` style output.
pub fn plan_commands(plan: &RoutingPlan) -> Vec<String> {
    let mut out: Vec<String> = plan_sysctls(plan)
        .into_iter()
        .map(|(p, v)| format!("sysctl -w {}={v}", p.replace('/', ".")))
        .collect();
    for item in plan_items(plan) {
        if let Some(args) = item.add_args() {
            out.push(format!("ip {}", args.join(" ")));
        }
    }
    out
}

/// The system operations routing needs, so command generation can be tested without root.
pub trait Host {
    /// Runs `ip ARGS`; Err carries its stderr.
    fn ip(&mut self, args: &[String]) -> io::Result<()>;
    fn read_sysctl(&mut self, path: &str) -> io::Result<String>;
    fn write_sysctl(&mut self, path: &str, value: &str) -> io::Result<()>;
}

/// The real host: the `ip` binary and `/proc/sys`.
#[derive(Debug, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn ip(&mut self, args: &[String]) -> io::Result<()> {
        let out = Command::new("ip").args(args).output().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run `ip` (is iproute2 installed?): {e}"),
            )
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn read_sysctl(&mut self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(Path::new("/proc/sys").join(path)).map(|s| s.trim().to_owned())
    }

    fn write_sysctl(&mut self, path: &str, value: &str) -> io::Result<()> {
        std::fs::write(Path::new("/proc/sys").join(path), value)
            .map_err(|e| io::Error::new(e.kind(), format!("writing /proc/sys/{path}: {e}")))
    }
}

/// Routing state on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StateFile {
    items: Vec<Item>,
}

/// Installed routing. [`Routing::remove`] undoes it; so does dropping it (best effort).
#[derive(Debug)]
pub struct Routing<H: Host> {
    host: H,
    state_path: PathBuf,
    items: Vec<Item>,
    removed: bool,
}

/// Errors installing routing.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("routing state file {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("installing routing: {0}")]
    Install(io::Error),
}

fn write_state(path: &Path, items: &[Item]) -> Result<(), RoutingError> {
    let err = |source| RoutingError::State {
        path: path.to_owned(),
        source,
    };
    let text = serde_json::to_string_pretty(&StateFile {
        items: items.to_vec(),
    })
    .map_err(|e| err(io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Removes whatever a previous run left in `state_dir` (after a crash). Returns how many items
/// were undone. A missing state file is not an error.
pub fn cleanup_stale<H: Host>(host: &mut H, state_dir: &Path) -> Result<usize, RoutingError> {
    let path = state_dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(RoutingError::State { path, source }),
    };
    let state: StateFile = serde_json::from_str(&text).map_err(|e| RoutingError::State {
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    let n = state.items.len();
    teardown(host, &state.items);
    std::fs::remove_file(&path).map_err(|source| RoutingError::State { path, source })?;
    Ok(n)
}

/// Undoes items in reverse order; failures are logged, not fatal (the item may already be
/// gone: routes vanish with their device).
fn teardown<H: Host>(host: &mut H, items: &[Item]) {
    for item in items.iter().rev() {
        match item {
            Item::Sysctl { path, previous, .. } => {
                if let Err(e) = host.write_sysctl(path, previous) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(%path, error = %e, "cannot restore sysctl");
                    }
                }
            }
            _ => {
                let Some(args) = item.del_args() else {
                    continue;
                };
                if let Err(e) = host.ip(&args) {
                    tracing::debug!(error = %e, "routing item already gone");
                }
            }
        }
    }
}

impl<H: Host> Routing<H> {
    /// Installs `plan`, recording each step in `state_dir` first. Stale state from an earlier
    /// run is removed before anything is added. On error, what was installed is removed again.
    pub fn install(
        mut host: H,
        plan: &RoutingPlan,
        state_dir: &Path,
    ) -> Result<Self, RoutingError> {
        std::fs::create_dir_all(state_dir).map_err(|source| RoutingError::State {
            path: state_dir.to_owned(),
            source,
        })?;
        let stale = cleanup_stale(&mut host, state_dir)?;
        if stale > 0 {
            tracing::warn!(
                items = stale,
                "removed routing left behind by an earlier run"
            );
        }
        let mut routing = Routing {
            host,
            state_path: state_dir.join(STATE_FILE),
            items: Vec::new(),
            removed: false,
        };
        if let Err(e) = routing.apply(plan) {
            let _ = routing.remove_inner();
            return Err(e);
        }
        Ok(routing)
    }

    fn apply(&mut self, plan: &RoutingPlan) -> Result<(), RoutingError> {
        for (path, value) in plan_sysctls(plan) {
            let previous = self.host.read_sysctl(&path).map_err(|e| {
                RoutingError::Install(io::Error::new(e.kind(), format!("reading {path}: {e}")))
            })?;
            if previous == value {
                continue;
            }
            self.record(Item::Sysctl {
                path: path.clone(),
                previous,
                value: value.clone(),
            })?;
            self.host
                .write_sysctl(&path, &value)
                .map_err(RoutingError::Install)?;
        }
        for item in plan_items(plan) {
            // Identical rules left by a run that crashed before writing its state: remove them
            // so the rule is not installed twice.
            if let Item::Rule { .. } = item {
                let del = item.del_args().expect("rules have ip arguments");
                for _ in 0..16 {
                    if self.host.ip(&del).is_err() {
                        break;
                    }
                }
            }
            self.record(item.clone())?;
            let add = item.add_args().expect("routes and rules have ip arguments");
            self.host.ip(&add).map_err(RoutingError::Install)?;
        }
        Ok(())
    }

    fn record(&mut self, item: Item) -> Result<(), RoutingError> {
        self.items.push(item);
        write_state(&self.state_path, &self.items)
    }

    /// What is installed, in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Removes everything and the state file.
    pub fn remove(mut self) -> io::Result<()> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        teardown(&mut self.host, &self.items);
        match std::fs::remove_file(&self.state_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl<H: Host> Drop for Routing<H> {
    fn drop(&mut self) {
        if let Err(e) = self.remove_inner() {
            tracing::warn!(error = %e, "cannot remove the routing state file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Default)]
    struct FakeHost {
        log: Vec<String>,
        sysctls: BTreeMap<String, String>,
        fail_on: Option<String>,
    }

    impl Host for &mut FakeHost {
        fn ip(&mut self, args: &[String]) -> io::Result<()> {
            let cmd = format!("ip {}", args.join(" "));
            self.log.push(cmd.clone());
            if cmd.contains(" del ") {
                // Nothing to delete in the fake unless it was added.
                let added = cmd
                    .replace(" del ", " add ")
                    .replace("route add", "route replace");
                if !self.log.iter().any(|c| c == &added) {
                    return Err(io::Error::other(
                        "RTNETLINK answers: No such file or directory",
                    ));
                }
            }
            if self.fail_on.as_deref().is_some_and(|f| cmd.contains(f)) {
                return Err(io::Error::other(
                    "RTNETLINK answers: Operation not permitted",
                ));
            }
            Ok(())
        }
        fn read_sysctl(&mut self, path: &str) -> io::Result<String> {
            Ok(self
                .sysctls
                .get(path)
                .cloned()
                .unwrap_or_else(|| "1".into()))
        }
        fn write_sysctl(&mut self, path: &str, value: &str) -> io::Result<()> {
            self.log.push(format!("sysctl {path}={value}"));
            self.sysctls.insert(path.to_owned(), value.to_owned());
            Ok(())
        }
    }

    fn plan() -> RoutingPlan {
        RoutingPlan {
            tun: "bulk0".into(),
            interfaces: vec!["eth0".into(), "eth1".into()],
            table: 100,
            priority: 100,
        }
    }

    #[test]
    fn commands_match_the_documented_ones() {
        let cmds = plan_commands(&plan());
        let expected = [
            "sysctl -w net.ipv4.conf.all.rp_filter=0",
            "sysctl -w net.ipv4.conf.bulk0.rp_filter=0",
            "sysctl -w net.ipv4.conf.eth0.rp_filter=0",
            "sysctl -w net.ipv4.conf.eth1.rp_filter=0",
            "sysctl -w net.ipv4.conf.bulk0.accept_local=1",
            "sysctl -w net.ipv4.ip_forward=1",
            "sysctl -w net.ipv6.conf.all.forwarding=1",
            "ip -4 route replace blackhole default table 100 metric 4294967295",
            "ip -4 route replace default dev bulk0 table 100",
            "ip -6 route replace blackhole default table 100 metric 4294967295",
            "ip -6 route replace default dev bulk0 table 100",
            "ip -4 rule add iif eth0 lookup 100 priority 100",
            "ip -6 rule add iif eth0 lookup 100 priority 100",
            "ip -4 rule add iif eth1 lookup 100 priority 100",
            "ip -6 rule add iif eth1 lookup 100 priority 100",
        ];
        assert_eq!(cmds, expected);
    }

    #[test]
    fn install_records_state_and_remove_undoes_in_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::default();
        host.sysctls
            .insert("net/ipv4/ip_forward".into(), "0".into());
        host.sysctls
            .insert("net/ipv4/conf/eth1/rp_filter".into(), "0".into());
        let routing = Routing::install(&mut host, &plan(), dir.path()).unwrap();
        let state: StateFile =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap())
                .unwrap();
        assert_eq!(state.items, routing.items());
        // eth1's rp_filter was already 0: not touched, not recorded.
        assert!(!state.items.iter().any(
            |i| matches!(i, Item::Sysctl { path, .. } if path == "net/ipv4/conf/eth1/rp_filter")
        ));
        assert_eq!(state.items.len(), 4 + 4 + 4);
        routing.remove().unwrap();
        assert!(!dir.path().join(STATE_FILE).exists());
        assert_eq!(host.sysctls["net/ipv4/ip_forward"], "0");
        assert_eq!(host.sysctls["net/ipv4/conf/all/rp_filter"], "1");
        let tail: Vec<&str> = host.log.iter().rev().take(3).map(|s| s.as_str()).collect();
        assert_eq!(
            tail,
            [
                "sysctl net/ipv4/conf/all/rp_filter=1",
                "sysctl net/ipv4/conf/bulk0/rp_filter=1",
                "sysctl net/ipv4/conf/eth0/rp_filter=1"
            ]
        );
        // Teardown starts with the last rule added.
        let last_add = host
            .log
            .iter()
            .rposition(|c| c.contains("rule add"))
            .unwrap();
        assert_eq!(
            host.log[last_add],
            "ip -6 rule add iif eth1 lookup 100 priority 100"
        );
        assert_eq!(
            host.log[last_add + 1],
            "ip -6 rule del iif eth1 lookup 100 priority 100"
        );
    }

    #[test]
    fn stale_state_from_a_crash_is_removed_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::default();
        let routing = Routing::install(&mut host, &plan(), dir.path()).unwrap();
        // A crash: the process dies without running destructors.
        std::mem::forget(routing);
        assert!(dir.path().join(STATE_FILE).exists());
        host.log.clear();
        let n = cleanup_stale(&mut &mut host, dir.path()).unwrap();
        assert_eq!(n, 12);
        assert!(host
            .log
            .iter()
            .any(|c| c == "ip -4 rule del iif eth0 lookup 100 priority 100"));
        assert!(!dir.path().join(STATE_FILE).exists());
        assert_eq!(cleanup_stale(&mut &mut host, dir.path()).unwrap(), 0);
    }

    #[test]
    fn failed_install_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost {
            fail_on: Some("rule add iif eth1".into()),
            ..Default::default()
        };
        host.sysctls
            .insert("net/ipv4/ip_forward".into(), "0".into());
        let err = Routing::install(&mut host, &plan(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
        // Once before adding (stale duplicates), once in the rollback.
        let dels = host
            .log
            .iter()
            .filter(|c| *c == "ip -4 rule del iif eth0 lookup 100 priority 100")
            .count();
        assert_eq!(dels, 2);
        assert_eq!(host.sysctls["net/ipv4/ip_forward"], "0");
        assert!(!dir.path().join(STATE_FILE).exists());
    }

    #[test]
    fn corrupt_state_file_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let mut host = FakeHost::default();
        let err = cleanup_stale(&mut &mut host, dir.path()).unwrap_err();
        assert!(err.to_string().contains(STATE_FILE), "{err}");
    }
}
