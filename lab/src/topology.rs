//! Namespaces, veth pairs, addresses and routes of a [`Lab`], and their removal.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::{addr, LabError};
use crate::netns;

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Prefix of every namespace name (letters, digits; e.g. `bhtest`, `bhdemo`). Namespaces
    /// `PREFIX-PID-N-ROLE` left by a process that no longer runs are removed by the next build.
    pub prefix: String,
    /// One label per workload namespace (e.g. `prod`, `dev`), at most 200.
    pub workloads: Vec<String>,
}

impl LabSpec {
    /// A lab with the given prefix and workload labels.
    pub fn new(prefix: &str, workloads: &[&str]) -> LabSpec {
        LabSpec {
            prefix: prefix.to_owned(),
            workloads: workloads.iter().map(|w| (*w).to_owned()).collect(),
        }
    }
}

/// One workload namespace.
#[derive(Debug, Clone)]
pub struct Workload {
    pub label: String,
    pub index: u8,
    /// Network namespace name.
    pub netns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// The gateway's interface towards this workload (in the gateway namespace).
    pub gateway_iface: String,
}

/// A built laboratory. Dropping it removes its namespaces (with their veth pairs) and its
/// working directory.
#[derive(Debug)]
pub struct Lab {
    id: String,
    gateway_ns: String,
    internet_ns: String,
    workloads: Vec<Workload>,
    workdir: PathBuf,
    created: Vec<String>,
}

/// The gateway's interface towards the internet namespace.
pub const UPLINK_IFACE: &str = "up0";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces of live labs in this process, removed by [`emergency_cleanup`] (Ctrl-C).
static LIVE_NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Child processes of live labs, killed by [`emergency_cleanup`].
static LIVE_CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Working directories of live labs, removed by [`emergency_cleanup`].
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl Lab {
    /// Builds the namespaces, links, addresses and routes. On error, whatever was already
    /// created is removed before returning.
    pub fn build(spec: &LabSpec) -> Result<Lab, LabError> {
        if spec.prefix.is_empty()
            || spec.prefix.len() > 16
            || !spec.prefix.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(LabError::Other(format!(
                "lab prefix {:?} must be 1-16 ASCII letters or digits",
                spec.prefix
            )));
        }
        if spec.workloads.len() > 200 {
            return Err(LabError::Other("at most 200 workloads".into()));
        }
        sweep_stale(&spec.prefix);
        let pid = std::process::id();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{pid}-{n}", spec.prefix);
        let workdir = std::env::temp_dir().join(format!("bulkhead-lab-{id}"));
        std::fs::create_dir_all(&workdir)
            .map_err(|e| LabError::io(format!("create {}", workdir.display()), e))?;
        LIVE_DIRS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(workdir.clone());
        let mut lab = Lab {
            gateway_ns: format!("{id}-gw"),
            internet_ns: format!("{id}-inet"),
            id,
            workloads: Vec::new(),
            workdir,
            created: Vec::new(),
        };
        for (i, label) in spec.workloads.iter().enumerate() {
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(LabError::Other(format!(
                    "workload label {label:?} must be ASCII letters, digits or '-'"
                )));
            }
            let index = u8::try_from(i).map_err(|_| LabError::Other("too many".into()))?;
            lab.workloads.push(Workload {
                label: label.clone(),
                index,
                netns: format!("{}-wl-{label}", lab.id),
                v4: addr::workload_v4(index),
                v6: addr::workload_v6(index),
                gateway_iface: format!("wl{index}"),
            });
        }
        lab.create()?;
        Ok(lab)
    }

    fn add_netns(&mut self, name: &str) -> Result<(), LabError> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_owned());
        LIVE_NAMESPACES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_owned());
        // No duplicate address detection: these links are private to the lab, and a tentative
        // link-local address delays the first IPv6 packet by up to two seconds.
        run_command(
            Command::new("ip").args([
                "netns",
                "exec",
                name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]),
            "ip netns exec sysctl accept_dad",
        )?;
        ip(&["-n", name, "link", "set", "lo", "up"]).map(drop)
    }

    fn create(&mut self) -> Result<(), LabError> {
        let gw = self.gateway_ns.clone();
        let inet = self.internet_ns.clone();
        self.add_netns(&gw)?;
        self.add_netns(&inet)?;
        for wl in self.workloads.clone() {
            self.add_netns(&wl.netns)?;
            let gw_if = wl.gateway_iface.as_str();
            ip(&[
                "-n", &gw, "link", "add", "name", gw_if, "type", "veth", "peer", "name", "eth0",
                "netns", &wl.netns,
            ])?;
            let gw4 = format!("{}/24", addr::workload_gw_v4(wl.index));
            let gw6 = format!("{}/64", addr::workload_gw_v6(wl.index));
            ip(&["-n", &gw, "addr", "add", &gw4, "dev", gw_if])?;
            ip(&["-n", &gw, "addr", "add", &gw6, "dev", gw_if, "nodad"])?;
            ip(&["-n", &gw, "link", "set", gw_if, "up"])?;
            let w4 = format!("{}/24", wl.v4);
            let w6 = format!("{}/64", wl.v6);
            ip(&["-n", &wl.netns, "addr", "add", &w4, "dev", "eth0"])?;
            ip(&["-n", &wl.netns, "addr", "add", &w6, "dev", "eth0", "nodad"])?;
            ip(&["-n", &wl.netns, "link", "set", "eth0", "up"])?;
            let via4 = addr::workload_gw_v4(wl.index).to_string();
            let via6 = addr::workload_gw_v6(wl.index).to_string();
            ip(&["-n", &wl.netns, "route", "add", "default", "via", &via4])?;
            ip(&[
                "-n", &wl.netns, "-6", "route", "add", "default", "via", &via6,
            ])?;
        }
        ip(&[
            "-n",
            &gw,
            "link",
            "add",
            "name",
            UPLINK_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &inet,
        ])?;
        let up4 = format!("{}/{}", addr::UPLINK_GW_V4, addr::UPLINK_PREFIX_V4);
        let up6 = format!("{}/{}", addr::UPLINK_GW_V6, addr::UPLINK_PREFIX_V6);
        ip(&["-n", &gw, "addr", "add", &up4, "dev", UPLINK_IFACE])?;
        ip(&["-n", &gw, "addr", "add", &up6, "dev", UPLINK_IFACE, "nodad"])?;
        ip(&["-n", &gw, "link", "set", UPLINK_IFACE, "up"])?;
        for a in [addr::SERVER_V4, addr::C2_V4] {
            let a = format!("{a}/{}", addr::UPLINK_PREFIX_V4);
            ip(&["-n", &inet, "addr", "add", &a, "dev", "eth0"])?;
        }
        for a in [addr::SERVER_V6, addr::C2_V6] {
            let a = format!("{a}/{}", addr::UPLINK_PREFIX_V6);
            ip(&["-n", &inet, "addr", "add", &a, "dev", "eth0", "nodad"])?;
        }
        ip(&["-n", &inet, "link", "set", "eth0", "up"])?;
        let via4 = addr::UPLINK_GW_V4.to_string();
        let via6 = addr::UPLINK_GW_V6.to_string();
        ip(&[
            "-n",
            &inet,
            "route",
            "add",
            addr::WORKLOADS_V4,
            "via",
            &via4,
        ])?;
        ip(&[
            "-n",
            &inet,
            "-6",
            "route",
            "add",
            addr::WORKLOADS_V6,
            "via",
            &via6,
        ])?;
        self.sysctl(&gw, "net.ipv4.ip_forward", "1")?;
        self.sysctl(&gw, "net.ipv6.conf.all.forwarding", "1")?;
        Ok(())
    }

    /// Sets a sysctl inside one of the lab's namespaces.
    pub fn sysctl(&self, netns: &str, key: &str, value: &str) -> Result<(), LabError> {
        let kv = format!("{key}={value}");
        run_command(
            Command::new("ip").args(["netns", "exec", netns, "sysctl", "-qw", &kv]),
            "ip netns exec sysctl",
        )
        .map(drop)
    }

    /// The lab's identifier (`PREFIX-PID-N`), the common part of its namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The gateway namespace.
    pub fn gateway_netns(&self) -> &str {
        &self.gateway_ns
    }

    /// The internet namespace.
    pub fn internet_netns(&self) -> &str {
        &self.internet_ns
    }

    /// The workloads, in the order of the spec.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workload with this label.
    ///
    /// # Panics
    /// If the lab has no such workload (a mistake in the caller, not a runtime condition).
    pub fn workload(&self, label: &str) -> &Workload {
        self.workloads
            .iter()
            .find(|w| w.label == label)
            .unwrap_or_else(|| panic!("the lab has no workload {label:?}"))
    }

    /// The gateway namespace's interfaces: one per workload, then the uplink.
    pub fn gateway_interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .workloads
            .iter()
            .map(|w| w.gateway_iface.clone())
            .collect();
        v.push(UPLINK_IFACE.to_owned());
        v
    }

    /// A scratch directory for this lab's files (CA, configs, logs), removed on drop.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Runs a command inside one of the lab's namespaces (`ip netns exec NS PROGRAM ARGS`).
    pub fn command(&self, netns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns, program]);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("lab: could not remove namespace {ns}: {e}");
            }
        }
        {
            let mut live = LIVE_NAMESPACES.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|n| !self.created.contains(n));
        }
        let _ = std::fs::remove_dir_all(&self.workdir);
        LIVE_DIRS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d != &self.workdir);
    }
}

/// Registers a child process that [`emergency_cleanup`] must kill.
pub(crate) fn register_child(pid: u32) {
    LIVE_CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(pid);
}

/// Forgets a child process (it was reaped).
pub(crate) fn unregister_child(pid: u32) {
    LIVE_CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
}

/// Kills the child processes and removes the namespaces of every lab of this process. For a
/// signal handler path (Ctrl-C) that exits right after, when destructors will not run.
pub fn emergency_cleanup() {
    let children: Vec<u32> = LIVE_CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for pid in &children {
        let _ = netns::send_signal(*pid, netns::Signal::Term);
    }
    // Give the gateways up to two seconds to remove their routing before their namespace goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while children.iter().any(|pid| process_alive(*pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let namespaces: Vec<String> = LIVE_NAMESPACES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for ns in namespaces.iter().rev() {
        let _ = ip(&["netns", "del", ns]);
    }
    let dirs: Vec<PathBuf> = LIVE_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// True while the process exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Removes namespaces `PREFIX-PID-...` (and their working directories) whose process no longer
/// exists.
fn sweep_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(netns::NETNS_RUN_DIR) else {
        return;
    };
    let head = format!("{prefix}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&head) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
    // Working directories `bulkhead-lab-PREFIX-PID-N` of processes that no longer run.
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let head = format!("bulkhead-lab-{prefix}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&head)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `ip ARGS`.
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    let mut c = Command::new("ip");
    c.args(args);
    run_command(&mut c, &format!("ip {}", args.join(" ")))
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run_command(cmd: &mut Command, display: &str) -> Result<String, LabError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("run `{display}`"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: display.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
