//! `bulkhead run` as a child process in a lab's gateway namespace: its generated gateway.toml,
//! its policy file (rewritten + SIGHUP for live updates), its decision log read back as JSON,
//! its metrics endpoint and its memory use.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::topology::{register_child, unregister_child, Lab};
use super::LabError;
use crate::netns::{self, Signal};

/// The TUN device the lab's gateway creates.
pub const TUN_NAME: &str = "bulk0";
/// Where the gateway serves metrics, inside its namespace.
pub const METRICS_LISTEN: &str = "127.0.0.1:9108";

/// How to run the gateway.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The `bulkhead` binary.
    pub binary: PathBuf,
    /// `[gateway] id`, found in every decision record.
    pub id: String,
    /// TUN queues / workers.
    pub queues: u16,
    /// The policy file's text.
    pub policy: String,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
    /// `[gateway] busy_poll_us`; `None` leaves the default.
    pub busy_poll_us: Option<u32>,
    /// `[gateway] fast_path`; `None` leaves the default (on where the kernel supports it).
    pub fast_path: Option<bool>,
    /// Appended to the generated gateway.toml (e.g. a `[limits]` table).
    pub extra_toml: String,
    /// Extra lines of the `[policy]` table (e.g. `load_timeout_ms = 100`).
    pub policy_toml: String,
    /// Whether `[policy] file` names the policy file (false: the gateway starts on deny-all, or
    /// on what its controller serves).
    pub policy_file: bool,
    /// Wait for `/readyz` at start (false: only for `/healthz`, e.g. a gateway that denies
    /// everything until its controller answers).
    pub wait_ready: bool,
    /// Extra environment of the process (e.g. systemd's `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

impl GatewaySpec {
    /// A gateway with id `lab-gw`, one queue, running `policy`.
    pub fn new(binary: impl Into<PathBuf>, policy: &str) -> GatewaySpec {
        GatewaySpec {
            binary: binary.into(),
            id: "lab-gw".into(),
            queues: 1,
            policy: policy.to_owned(),
            ready_timeout: Duration::from_secs(20),
            busy_poll_us: None,
            fast_path: None,
            extra_toml: String::new(),
            policy_toml: String::new(),
            policy_file: true,
            wait_ready: true,
            env: Vec::new(),
        }
    }
}

/// A running `bulkhead run`. Dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct GatewayProcess {
    child: Option<Child>,
    pid: u32,
    netns: String,
    dir: PathBuf,
    config_path: PathBuf,
    policy_path: PathBuf,
    decisions_path: PathBuf,
    output_path: PathBuf,
}

/// The gateway.toml the lab generates (see DESIGN "Gateway configuration").
pub fn gateway_toml(
    spec: &GatewaySpec,
    interfaces: &[String],
    policy: &Path,
    state: &Path,
    decisions: &Path,
) -> String {
    let ifaces = interfaces
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[gateway]\nid = {id:?}\ntun = {TUN_NAME:?}\nqueues = {q}\ninterfaces = [{ifaces}]\nmanage_routing = true\n{busy}{fast}\n\
         [policy]\n{file}state_dir = {s:?}\n{policy_extra}\n\
         [log]\ndecisions = {d:?}\n\n\
         [metrics]\nlisten = {METRICS_LISTEN:?}\n\n{dns}{extra}",
        extra = spec.extra_toml,
        // The DNS check's resolver is the lab's own (`crate::dns`), so that a lab never asks
        // the host's resolvers; a test that runs the lab's DNS server sets its own `[dns]`.
        dns = if spec.extra_toml.contains("[dns]") {
            String::new()
        } else {
            format!(
                "[dns]\nservers = [\"{}:{}\"]\n\n",
                crate::addr::SERVER_V4,
                crate::dns::DNS_PORT
            )
        },
        policy_extra = spec.policy_toml,
        busy = spec
            .busy_poll_us
            .map_or_else(String::new, |us| format!("busy_poll_us = {us}\n")),
        fast = spec
            .fast_path
            .map_or_else(String::new, |on| format!("fast_path = {on}\n")),
        id = spec.id,
        q = spec.queues,
        file = if spec.policy_file {
            format!("file = {:?}\n", policy.display().to_string())
        } else {
            String::new()
        },
        s = state.display().to_string(),
        d = decisions.display().to_string(),
    )
}

impl GatewayProcess {
    /// Writes the configuration and policy into the lab's work directory, starts
    /// `bulkhead run` in the gateway namespace and waits until `/readyz` answers 200 and the TUN
    /// device is up.
    pub fn start(lab: &Lab, spec: &GatewaySpec) -> Result<GatewayProcess, LabError> {
        let dir = lab.workdir().join("gateway");
        let state = dir.join("state");
        std::fs::create_dir_all(&state)
            .map_err(|e| LabError::io(format!("create {}", state.display()), e))?;
        let policy_path = dir.join("policy.toml");
        let decisions_path = dir.join("decisions.jsonl");
        let config_path = dir.join("gateway.toml");
        let output_path = dir.join("gateway.out");
        write_file(&policy_path, &spec.policy)?;
        let config = gateway_toml(
            spec,
            &lab.gateway_interfaces(),
            &policy_path,
            &state,
            &decisions_path,
        );
        write_file(&config_path, &config)?;
        let out = File::create(&output_path)
            .map_err(|e| LabError::io(format!("create {}", output_path.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| LabError::io("dup output file", e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", lab.gateway_netns()])
            .arg(&spec.binary)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| LabError::io(format!("start {}", spec.binary.display()), e))?;
        let pid = child.id();
        register_child(pid);
        let mut gw = GatewayProcess {
            child: Some(child),
            pid,
            netns: lab.gateway_netns().to_owned(),
            dir,
            config_path,
            policy_path,
            decisions_path,
            output_path,
        };
        gw.wait_ready(spec.ready_timeout, spec.wait_ready)?;
        Ok(gw)
    }

    /// Waits for `/readyz` (or, unless `ready`, `/healthz`) to answer 200 with the TUN up.
    fn wait_ready(&mut self, timeout: Duration, ready: bool) -> Result<(), LabError> {
        let path = if ready { "/readyz" } else { "/healthz" };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    unregister_child(self.pid);
                    self.child = None;
                    return Err(LabError::Other(format!(
                        "the gateway exited during start-up ({status}); its output:\n{}",
                        self.output()
                    )));
                }
            }
            let answered = matches!(self.http_get(path), Ok((200, _)));
            if answered && self.tun_is_up() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Other(format!(
                    "the gateway was not ready after {timeout:?}; its output:\n{}",
                    self.output()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tun_is_up(&self) -> bool {
        super::topology::ip(&["-n", &self.netns, "-br", "link", "show", "dev", TUN_NAME])
            .map(|o| o.contains("UP") || o.contains("UNKNOWN"))
            .unwrap_or(false)
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The generated gateway.toml.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The policy file the gateway reads.
    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    /// The decision log file.
    pub fn decisions_path(&self) -> &Path {
        &self.decisions_path
    }

    /// The gateway's stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output_path).unwrap_or_default()
    }

    /// Sends a signal to the gateway.
    pub fn signal(&self, signal: Signal) -> Result<(), LabError> {
        netns::send_signal(self.pid, signal)
            .map_err(|e| LabError::io(format!("signal the gateway ({signal:?})"), e))
    }

    /// Replaces the policy file (atomically: write then rename) and sends SIGHUP.
    pub fn reload(&self, policy: &str) -> Result<(), LabError> {
        let tmp = self.dir.join("policy.toml.new");
        write_file(&tmp, policy)?;
        std::fs::rename(&tmp, &self.policy_path)
            .map_err(|e| LabError::io("replace the policy file", e))?;
        self.signal(Signal::Hup)
    }

    /// Every decision record written so far, parsed. A line that is not JSON is an error (the
    /// last line may be in the middle of being written and is then skipped).
    pub fn records(&self) -> Result<Vec<serde_json::Value>, LabError> {
        let text = match std::fs::read_to_string(&self.decisions_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LabError::io("read the decision log", e)),
        };
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(v) => out.push(v),
                Err(_) if i + 1 == lines.len() && !complete => {}
                Err(e) => {
                    return Err(LabError::Other(format!(
                        "decision log line {}: {e}: {line}",
                        i + 1
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Waits until a record satisfies `pred`, and returns it.
    pub fn wait_record(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(records) = self.records() {
                if let Some(r) = records.into_iter().find(|r| pred(r)) {
                    return Some(r);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET PATH` on the metrics listener (from inside the gateway namespace): status and body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String), LabError> {
        let path = path.to_owned();
        netns::run_in(&self.netns, move || {
            http_get_blocking(METRICS_LISTEN, &path)
        })
        .and_then(|r| r)
        .map_err(|e| LabError::io("query the metrics endpoint", e))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> Result<String, LabError> {
        match self.http_get("/metrics")? {
            (200, body) => Ok(body),
            (status, _) => Err(LabError::Other(format!("/metrics answered {status}"))),
        }
    }

    /// The gateway's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the gateway with SIGTERM and waits up to `timeout` for it to exit (then SIGKILL).
    /// Returns its exit status.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, LabError> {
        let Some(mut child) = self.child.take() else {
            return Err(LabError::Other("the gateway is not running".into()));
        };
        let _ = netns::send_signal(self.pid, Signal::Term);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let status = child
                        .wait()
                        .map_err(|e| LabError::io("wait for the gateway", e))?;
                    unregister_child(self.pid);
                    return Err(LabError::Other(format!(
                        "the gateway did not stop within {timeout:?} after SIGTERM ({status})"
                    )));
                }
            }
        };
        unregister_child(self.pid);
        Ok(status)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Duration::from_secs(5));
        }
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

/// A minimal blocking HTTP/1.0 GET with a 2 s deadline and a 4 MiB bound on the answer.
pub fn http_get_blocking(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.take(4 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))?;
    Ok((status, body.to_owned()))
}

/// The sum of the samples of metric `name` whose labels include every `(key, value)` of
/// `labels` (Prometheus text format). None when no sample matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once('}') else {
                continue;
            };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let ok = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|kv| kv.trim() == format!("{k}=\"{v}\""))
        });
        if !ok {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_summed_by_label() {
        let text = "# HELP x y\n# TYPE bulkhead_drops_total counter\n\
                    bulkhead_drops_total{reason=\"flow_limit\"} 5\n\
                    bulkhead_drops_total{reason=\"policy\"} 2\n\
                    bulkhead_drops_total_other 9\n\
                    bulkhead_active_flows 3\n";
        assert_eq!(metric_value(text, "bulkhead_drops_total", &[]), Some(7.0));
        assert_eq!(
            metric_value(text, "bulkhead_drops_total", &[("reason", "flow_limit")]),
            Some(5.0)
        );
        assert_eq!(metric_value(text, "bulkhead_active_flows", &[]), Some(3.0));
        assert_eq!(metric_value(text, "bulkhead_missing", &[]), None);
    }

    #[test]
    fn generated_config_names_every_interface() {
        let spec = GatewaySpec::new("/bin/true", "");
        let t = gateway_toml(
            &spec,
            &["wl0".into(), "up0".into()],
            Path::new("p.toml"),
            Path::new("st"),
            Path::new("d.jsonl"),
        );
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["gateway"]["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(v["gateway"]["manage_routing"].as_bool(), Some(true));
        assert_eq!(v["log"]["decisions"].as_str(), Some("d.jsonl"));
        assert_eq!(v["metrics"]["listen"].as_str(), Some(METRICS_LISTEN));
    }
}
