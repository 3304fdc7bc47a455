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
//!    Just before it, at priority `P - 1`, link-scoped traffic that is never routed off the link
//!    (multicast `224.0.0.0/4` / `ff00::/8`, broadcast, IPv6 link-local `fe80::/10`: neighbour
//!    discovery, MLD, DHCP) is sent to the main table: it is not egress, and diverting it would
//!    only fill the decision log with denies of the hosts' own housekeeping.
//!
//! With the kernel fast path (`gateway.fast_path`, see [`crate::fastpath`]), three more things:
//! the sysctl `net.netfilter.nf_conntrack_acct = 1` (conntrack counts the bytes of handed-off
//! flows for their flow-end records), the nftables table `inet bulkhead_TUN` (after the routes:
//! it copies the fast-path bit of the conntrack mark to the packet mark, installed over netlink),
//! and per interface and family, at priority `P - 1` with the bypass rules, `ip rule add iif
//! IFACE fwmark BIT/BIT lookup main`: packets of handed-off flows skip the diversion. Teardown
//! removes the rules first, so no packet is marked without being routed as the mark says.
//!
//! Everything else is done with the `ip` command (iproute2) and `/proc/sys` writes: the commands the
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
    /// The kernel fast path's table and rules, when it is on and supported.
    pub fast_path: Option<FastPathPlan>,
}

/// What the kernel fast path adds to the routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPathPlan {
    /// The nftables table (family `inet`).
    pub table: String,
    /// The fast-path bit of the conntrack and packet marks.
    pub mark: u32,
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
    /// A diversion rule, or (with `to`) a bypass of the diversion for one prefix.
    Rule {
        family: Family,
        iif: String,
        /// Only packets to this prefix (bypass rules); `None` = every packet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Only packets whose mark has this bit (the fast path's bypass).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fwmark: Option<u32>,
        table: u32,
        priority: u32,
    },
    /// The fast path's nftables table, installed over netlink.
    NftTable { name: String, mark: u32 },
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
            Item::Sysctl { .. } | Item::NftTable { .. } => None,
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
                to,
                fwmark,
                table,
                priority,
            } => Some(
                [family.flag(), "rule", "add"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(rule_spec(iif, to.as_deref(), *fwmark, *table, *priority))
                    .collect(),
            ),
        }
    }

    /// `ip` arguments that remove it (None for sysctls).
    pub fn del_args(&self) -> Option<Vec<String>> {
        match self {
            Item::Sysctl { .. } | Item::NftTable { .. } => None,
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
                to,
                fwmark,
                table,
                priority,
            } => Some(
                [family.flag(), "rule", "del"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(rule_spec(iif, to.as_deref(), *fwmark, *table, *priority))
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

fn rule_spec(
    iif: &str,
    to: Option<&str>,
    fwmark: Option<u32>,
    table: u32,
    priority: u32,
) -> Vec<String> {
    let mut spec = vec!["iif".into(), iif.to_owned()];
    if let Some(prefix) = to {
        spec.extend(["to".into(), prefix.to_owned()]);
    }
    if let Some(mark) = fwmark {
        spec.extend(["fwmark".into(), format!("{mark:#x}/{mark:#x}")]);
    }
    spec.extend([
        "lookup".into(),
        table.to_string(),
        "priority".into(),
        priority.to_string(),
    ]);
    spec
}

/// The main routing table's number.
pub const MAIN_TABLE: u32 = 254;

/// Link-scoped destinations that bypass the diversion (see the module docs).
pub fn bypass_prefixes(family: Family) -> &'static [&'static str] {
    match family {
        Family::V4 => &["224.0.0.0/4", "255.255.255.255/32"],
        Family::V6 => &["ff00::/8", "fe80::/10"],
    }
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
    if plan.fast_path.is_some() {
        out.push(("net/netfilter/nf_conntrack_acct".into(), "1".into()));
    }
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
    if let Some(fp) = &plan.fast_path {
        out.push(Item::NftTable {
            name: fp.table.clone(),
            mark: fp.mark,
        });
    }
    for iface in &plan.interfaces {
        for family in [Family::V4, Family::V6] {
            for prefix in bypass_prefixes(family) {
                out.push(Item::Rule {
                    family,
                    iif: iface.clone(),
                    to: Some((*prefix).to_owned()),
                    fwmark: None,
                    table: MAIN_TABLE,
                    // Config validation keeps the priority at 2 or more.
                    priority: plan.priority - 1,
                });
            }
            if let Some(fp) = &plan.fast_path {
                out.push(Item::Rule {
                    family,
                    iif: iface.clone(),
                    to: None,
                    fwmark: Some(fp.mark),
                    table: MAIN_TABLE,
                    priority: plan.priority - 1,
                });
            }
            out.push(Item::Rule {
                family,
                iif: iface.clone(),
                to: None,
                fwmark: None,
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
        } else if let Item::NftTable { name, mark } = &item {
            out.push(nft_command(name, *mark));
        }
    }
    out
}

/// The `nft` command equivalent to the fast path's table (the gateway installs it over netlink).
pub fn nft_command(table: &str, mark: u32) -> String {
    format!(
        "nft 'add table inet {table}; add chain inet {table} prerouting {{ type filter hook \
         prerouting priority mangle; }}; add rule inet {table} prerouting ct mark and {mark:#x} == \
         {mark:#x} meta mark set meta mark or {mark:#x}'"
    )
}

/// The system operations routing needs, so command generation can be tested without root.
pub trait Host {
    /// Runs `ip ARGS`; Err carries its stderr.
    fn ip(&mut self, args: &[String]) -> io::Result<()>;
    fn read_sysctl(&mut self, path: &str) -> io::Result<String>;
    fn write_sysctl(&mut self, path: &str, value: &str) -> io::Result<()>;
    /// Installs the fast path's nftables table (`Some(mark)`) or deletes it (`None`; a missing
    /// table is not an error).
    fn nft_table(&mut self, name: &str, mark: Option<u32>) -> io::Result<()>;
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

    fn nft_table(&mut self, name: &str, mark: Option<u32>) -> io::Result<()> {
        let r = match mark {
            Some(m) => crate::fastpath::install_table(name, m),
            None => crate::fastpath::delete_table(name),
        };
        r.map_err(|e| io::Error::new(e.kind(), format!("nftables table inet {name}: {e}")))
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
    #[error("routing state file {}: {error}", .path.display())]
    State { path: PathBuf, error: io::Error },
    #[error("installing routing: {0}")]
    Install(io::Error),
}

fn write_state(path: &Path, items: &[Item]) -> Result<(), RoutingError> {
    let err = |error| RoutingError::State {
        path: path.to_owned(),
        error,
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
        Err(error) => return Err(RoutingError::State { path, error }),
    };
    let state: StateFile = serde_json::from_str(&text).map_err(|e| RoutingError::State {
        path: path.clone(),
        error: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    let n = state.items.len();
    teardown(host, &state.items);
    std::fs::remove_file(&path).map_err(|error| RoutingError::State { path, error })?;
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
            Item::NftTable { name, .. } => {
                if let Err(e) = host.nft_table(name, None) {
                    tracing::warn!(table = %name, error = %e, "cannot remove the fast path's table");
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
        std::fs::create_dir_all(state_dir).map_err(|error| RoutingError::State {
            path: state_dir.to_owned(),
            error,
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
            if let Item::NftTable { name, mark } = &item {
                self.host
                    .nft_table(name, Some(*mark))
                    .map_err(RoutingError::Install)?;
                continue;
            }
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
        fn nft_table(&mut self, name: &str, mark: Option<u32>) -> io::Result<()> {
            self.log.push(match mark {
                Some(m) => format!("nft add {name} {m:#x}"),
                None => format!("nft delete {name}"),
            });
            Ok(())
        }
    }

    fn plan() -> RoutingPlan {
        RoutingPlan {
            tun: "bulk0".into(),
            interfaces: vec!["eth0".into(), "eth1".into()],
            table: 100,
            priority: 100,
            fast_path: None,
        }
    }

    fn fast_plan() -> RoutingPlan {
        RoutingPlan {
            fast_path: Some(FastPathPlan {
                table: "bulkhead_bulk0".into(),
                mark: 0x0100_0000,
            }),
            interfaces: vec!["eth0".into()],
            ..plan()
        }
    }

    #[test]
    fn fast_path_adds_accounting_its_table_and_a_bypass_ahead_of_each_diversion() {
        let cmds = plan_commands(&fast_plan());
        assert!(cmds.contains(&"sysctl -w net.netfilter.nf_conntrack_acct=1".to_owned()));
        let table = cmds.iter().position(|c| c.starts_with("nft ")).unwrap();
        let bypass = cmds
            .iter()
            .position(|c| {
                c == "ip -4 rule add iif eth0 fwmark 0x1000000/0x1000000 lookup 254 priority 99"
            })
            .unwrap();
        let divert = cmds
            .iter()
            .position(|c| c == "ip -4 rule add iif eth0 lookup 100 priority 100")
            .unwrap();
        assert!(table < bypass && bypass < divert, "{cmds:#?}");
        assert!(cmds.contains(
            &"ip -6 rule add iif eth0 fwmark 0x1000000/0x1000000 lookup 254 priority 99".to_owned()
        ));
        assert!(
            cmds[table].contains("ct mark and 0x1000000 == 0x1000000"),
            "{}",
            cmds[table]
        );
    }

    #[test]
    fn fast_path_table_is_removed_after_its_rules_and_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = FakeHost::default();
        let routing = Routing::install(&mut host, &fast_plan(), dir.path()).unwrap();
        routing.remove().unwrap();
        assert!(host
            .log
            .contains(&"nft add bulkhead_bulk0 0x1000000".to_owned()));

        let del = host
            .log
            .iter()
            .position(|c| c == "nft delete bulkhead_bulk0")
            .unwrap();
        let rule_del = host
            .log
            .iter()
            .rposition(|c| c.contains("fwmark") && c.contains(" del "))
            .unwrap();
        assert!(rule_del < del, "rules go before the table: {:#?}", host.log);
        // A crash leaves the state file; the next start removes the table too.
        let routing = Routing::install(&mut host, &fast_plan(), dir.path()).unwrap();
        std::mem::forget(routing);
        host.log.clear();
        cleanup_stale(&mut &mut host, dir.path()).unwrap();
        assert!(
            host.log.contains(&"nft delete bulkhead_bulk0".to_owned()),
            "{:#?}",
            host.log
        );
        assert!(host
            .log
            .iter()
            .any(|c| c
                == "ip -4 rule del iif eth0 fwmark 0x1000000/0x1000000 lookup 254 priority 99"));
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
            "ip -4 rule add iif eth0 to 224.0.0.0/4 lookup 254 priority 99",
            "ip -4 rule add iif eth0 to 255.255.255.255/32 lookup 254 priority 99",
            "ip -4 rule add iif eth0 lookup 100 priority 100",
            "ip -6 rule add iif eth0 to ff00::/8 lookup 254 priority 99",
            "ip -6 rule add iif eth0 to fe80::/10 lookup 254 priority 99",
            "ip -6 rule add iif eth0 lookup 100 priority 100",
            "ip -4 rule add iif eth1 to 224.0.0.0/4 lookup 254 priority 99",
            "ip -4 rule add iif eth1 to 255.255.255.255/32 lookup 254 priority 99",
            "ip -4 rule add iif eth1 lookup 100 priority 100",
            "ip -6 rule add iif eth1 to ff00::/8 lookup 254 priority 99",
            "ip -6 rule add iif eth1 to fe80::/10 lookup 254 priority 99",
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
        // 4 sysctls changed, 4 routes, and per interface and family 2 bypass rules + 1 diversion.
        assert_eq!(state.items.len(), 4 + 4 + 2 * 2 * 3);
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
        assert_eq!(n, 4 + 4 + 2 * 2 * 3);
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
