//! `bulkhead run` on a real multi-queue TUN, in network namespaces (root only).
//!
//! Topology (names unique per run; every namespace is removed when the test ends, also when it
//! fails; traffic stays inside them):
//!
//! ```text
//!  client ns            gateway ns (bulkhead run)                 server ns
//!  c0 10.77.1.2 ---- g0 10.77.1.1  [TUN bulk0]  g1 10.77.2.1 ---- s0 10.77.2.2
//!     fd77:1::2         fd77:1::1                  fd77:2::1         fd77:2::2
//! ```
//!
//! The gateway diverts everything arriving on g0 and g1 through its TUN (`manage_routing`).
//! Checked: a permitted TCP connection passes (IPv4 and IPv6) and echoes its data intact; a
//! connection the default denies times out; a `reject` rule resets at once; `/metrics` and
//! `/readyz` answer; SIGHUP to a policy without the permit cuts an open connection within 1 s
//! (record reason `policy_update`) and refuses new ones; SIGHUP to an invalid file keeps the
//! policy and counts the failure; SIGTERM exits 0 and removes the ip rules and the state file.
//!
//! Client and server are small Python programs (`python3` is needed; the test skips without it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const SERVER_PY: &str = r#"
import socket, sys, threading
def serve(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(64)
    while True:
        c, _ = s.accept()
        def h(c):
            try:
                while True:
                    d = c.recv(65536)
                    if not d: break
                    c.sendall(d)
            except OSError: pass
            c.close()
        threading.Thread(target=h, args=(c,), daemon=True).start()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Connects, then echoes 1000 random bytes every 50 ms for SECS seconds. Prints `connected`,
/// then `alive` (every echo intact) or `broken ERROR`; or `connect-failed ERROR`.
const CLIENT_PY: &str = r#"
import os, socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(2)
try:
    s.connect((host, port))
except Exception as e:
    print("connect-failed", type(e).__name__, flush=True); sys.exit(0)
print("connected", flush=True)
end = time.time() + secs
try:
    while True:
        msg = os.urandom(1000); s.sendall(msg); d = b""
        while len(d) < len(msg):
            r = s.recv(len(msg) - len(d))
            if not r: raise ConnectionResetError("eof")
            d += r
        if d != msg: raise ValueError("corrupted echo")
        if time.time() > end: break
        time.sleep(0.05)
    print("alive", flush=True)
except Exception as e:
    print("broken", type(e).__name__, flush=True)
"#;

const FETCH_PY: &str = r#"
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://127.0.0.1:9108" + sys.argv[1], timeout=2)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:
    print("error", e)
"#;

fn policy(ports: &str) -> String {
    format!(
        r#"
[policy]
default_action = "deny"
mode = "enforce"

[smartgroups.clients]
cidrs = ["10.77.1.0/24", "fd77:1::/64"]

[addressgroups.servers]
cidrs = ["10.77.2.2/32", "fd77:2::2/128"]

[[rules]]
name = "clients-to-servers"
priority = 100
src = ["clients"]
dst = ["servers"]
protocol = "tcp"
ports = [{ports}]
action = "permit"
log = true

[[rules]]
name = "reject-9091"
priority = 200
src = ["any"]
dst = ["any"]
protocol = "tcp"
ports = ["9091"]
action = "reject"
"#
    )
}

const GATEWAY_TOML: &str = r#"
[gateway]
id = "tun-runtime-test"
tun = "bulk0"
queues = 2
interfaces = ["g0", "g1"]
manage_routing = true

[policy]
file = "policy.toml"
state_dir = "state"

[log]
decisions = "decisions.jsonl"

[metrics]
listen = "127.0.0.1:9108"
"#;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Three namespaces, removed on drop.
struct Lab {
    client: String,
    gateway: String,
    server: String,
}

impl Lab {
    fn new() -> Result<Lab> {
        let tag = format!("bhrt{}", std::process::id());
        let lab = Lab {
            client: format!("{tag}c"),
            gateway: format!("{tag}g"),
            server: format!("{tag}s"),
        };
        for ns in [&lab.client, &lab.gateway, &lab.server] {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let (c, g, s) = (&lab.client, &lab.gateway, &lab.server);
        let cmds: Vec<Vec<&str>> = vec![
            vec![
                "ip", "-n", g, "link", "add", "g0", "type", "veth", "peer", "name", "c0", "netns",
                c,
            ],
            vec![
                "ip", "-n", g, "link", "add", "g1", "type", "veth", "peer", "name", "s0", "netns",
                s,
            ],
            vec!["ip", "-n", g, "addr", "add", "10.77.1.1/24", "dev", "g0"],
            vec![
                "ip",
                "-n",
                g,
                "addr",
                "add",
                "fd77:1::1/64",
                "dev",
                "g0",
                "nodad",
            ],
            vec!["ip", "-n", g, "addr", "add", "10.77.2.1/24", "dev", "g1"],
            vec![
                "ip",
                "-n",
                g,
                "addr",
                "add",
                "fd77:2::1/64",
                "dev",
                "g1",
                "nodad",
            ],
            vec!["ip", "-n", c, "addr", "add", "10.77.1.2/24", "dev", "c0"],
            vec![
                "ip",
                "-n",
                c,
                "addr",
                "add",
                "fd77:1::2/64",
                "dev",
                "c0",
                "nodad",
            ],
            vec!["ip", "-n", s, "addr", "add", "10.77.2.2/24", "dev", "s0"],
            vec![
                "ip",
                "-n",
                s,
                "addr",
                "add",
                "fd77:2::2/64",
                "dev",
                "s0",
                "nodad",
            ],
            vec!["ip", "-n", g, "link", "set", "g0", "up"],
            vec!["ip", "-n", g, "link", "set", "g1", "up"],
            vec!["ip", "-n", c, "link", "set", "c0", "up"],
            vec!["ip", "-n", s, "link", "set", "s0", "up"],
            vec!["ip", "-n", c, "route", "add", "default", "via", "10.77.1.1"],
            vec![
                "ip",
                "-n",
                c,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd77:1::1",
            ],
            vec!["ip", "-n", s, "route", "add", "default", "via", "10.77.2.1"],
            vec![
                "ip",
                "-n",
                s,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd77:2::1",
            ],
        ];
        for cmd in cmds {
            run(&cmd)?;
        }
        Ok(lab)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.client, &self.gateway, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(mut cmd: Command, stderr: Stdio) -> Result<Proc> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn()?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Proc { child, stdout })
    }

    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        self.stdout
            .as_mut()
            .context("no stdout")?
            .read_line(&mut l)?;
        Ok(l.trim().to_owned())
    }

    fn signal(&self, sig: &str) -> Result<()> {
        run(&["kill", &format!("-{sig}"), &self.child.id().to_string()]).map(|_| ())
    }

    fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if start.elapsed() > limit {
                bail!("process did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

struct Ctx<'a> {
    lab: &'a Lab,
    dir: PathBuf,
}

impl Ctx<'_> {
    fn client(&self, host: &str, port: u16, secs: f32) -> Result<Proc> {
        let script = self.dir.join("client.py");
        let cmd = self.lab.exec(
            &self.lab.client,
            &[
                "python3",
                script.to_str().unwrap(),
                host,
                &port.to_string(),
                &secs.to_string(),
            ],
        );
        Proc::spawn(cmd, Stdio::inherit())
    }

    /// Runs a client to the end and returns its last line.
    fn connect(&self, host: &str, port: u16, secs: f32) -> Result<String> {
        let mut p = self.client(host, port, secs)?;
        let mut last = p.line()?;
        if last == "connected" {
            last = p.line()?;
        }
        p.wait_exit(Duration::from_secs(10))?;
        Ok(last)
    }

    fn fetch(&self, path: &str) -> Result<(u16, String)> {
        let script = self.dir.join("fetch.py");
        let out = self
            .lab
            .exec(
                &self.lab.gateway,
                &["python3", script.to_str().unwrap(), path],
            )
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
        Ok((status.trim().parse().unwrap_or(0), body.to_owned()))
    }

    fn metric(&self, series: &str) -> Result<u64> {
        let (status, body) = self.fetch("/metrics")?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .with_context(|| format!("no {series} in /metrics"))?
            .trim()
            .parse()
            .context("metric value")
    }

    fn gateway_rules(&self) -> Result<String> {
        let out = self.lab.exec(&self.lab.gateway, &["ip", "rule"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn records(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).context("record is JSON"))
        .collect()
}

#[test]
fn gateway_on_a_real_tun() -> Result<()> {
    if !is_root() {
        eprintln!("SKIPPED gateway_on_a_real_tun: needs root (network namespaces, /dev/net/tun)");
        return Ok(());
    }
    if !Path::new("/dev/net/tun").exists() || !have("ip") || !have("python3") {
        eprintln!("SKIPPED gateway_on_a_real_tun: needs /dev/net/tun, iproute2 and python3");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    for (name, text) in [
        ("server.py", SERVER_PY),
        ("client.py", CLIENT_PY),
        ("fetch.py", FETCH_PY),
        ("gateway.toml", GATEWAY_TOML),
    ] {
        std::fs::write(dir.path().join(name), text)?;
    }
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy(r#""8080""#))?;

    let lab = Lab::new()?;
    let ctx = Ctx {
        lab: &lab,
        dir: dir.path().to_owned(),
    };

    let mut server = Proc::spawn(
        lab.exec(
            &lab.server,
            &[
                "python3",
                dir.path().join("server.py").to_str().unwrap(),
                "8080",
                "9090",
                "9091",
            ],
        ),
        Stdio::inherit(),
    )?;
    anyhow::ensure!(server.line()? == "ready", "echo server did not start");

    let mut gw_cmd = lab.exec(
        &lab.gateway,
        &[
            env!("CARGO_BIN_EXE_bulkhead"),
            "run",
            "--config",
            dir.path().join("gateway.toml").to_str().unwrap(),
        ],
    );
    gw_cmd.env("RUST_LOG", "info");
    let mut gw = Proc::spawn(gw_cmd, Stdio::inherit())?;

    // Ready within 10 s.
    let start = Instant::now();
    loop {
        if let Some(status) = gw.child.try_wait()? {
            bail!("bulkhead run exited early: {status}");
        }
        if ctx.fetch("/readyz")?.0 == 200 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(10),
            "gateway never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ctx.fetch("/healthz")?.0, 200);
    let rules = ctx.gateway_rules()?;
    assert!(rules.contains("iif g0 lookup 100"), "{rules}");
    assert!(rules.contains("iif g1 lookup 100"), "{rules}");
    assert!(dir.path().join("state/routing-state.json").exists());

    // Permitted, both families; data intact.
    assert_eq!(ctx.connect("10.77.2.2", 8080, 0.5)?, "alive");
    assert_eq!(ctx.connect("fd77:2::2", 8080, 0.5)?, "alive");
    // Default deny: silent drop, the client times out.
    assert_eq!(
        ctx.connect("10.77.2.2", 9090, 0.0)?,
        "connect-failed TimeoutError"
    );
    // Reject: refused at once.
    let t = Instant::now();
    let rejected = ctx.connect("10.77.2.2", 9091, 0.0)?;
    assert!(
        rejected == "connect-failed ConnectionRefusedError"
            || rejected == "connect-failed ConnectionResetError",
        "{rejected}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "reject took {:?}",
        t.elapsed()
    );

    assert!(
        ctx.metric(
            r#"bulkhead_decisions_total{action="allowed",disposition="allowed",reason="rule"}"#
        )? >= 2
    );
    assert!(
        ctx.metric(
            r#"bulkhead_decisions_total{action="denied",disposition="blocked",reason="default"}"#
        )? >= 1
    );
    assert!(
        ctx.metric(
            r#"bulkhead_decisions_total{action="denied",disposition="blocked",reason="rule"}"#
        )? >= 1
    );
    assert!(ctx.metric("bulkhead_packets_forwarded_total")? > 10);
    assert_eq!(ctx.metric("bulkhead_policy_version")?, 1);
    assert_eq!(ctx.metric("bulkhead_ready")?, 1);

    // A long-lived connection, then a policy without the permit: it is cut within 1 s.
    let mut long = ctx.client("10.77.2.2", 8080, 20.0)?;
    assert_eq!(long.line()?, "connected");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&policy_path, policy(r#""5201""#))?;
    let t = Instant::now();
    gw.signal("HUP")?;
    let outcome = long.line()?;
    let cut_after = t.elapsed();
    assert_eq!(outcome, "broken ConnectionResetError");
    assert!(
        cut_after < Duration::from_secs(1),
        "cut after {cut_after:?}"
    );
    assert_eq!(ctx.metric("bulkhead_policy_version")?, 2);
    assert_eq!(ctx.metric("bulkhead_policy_reloads_total")?, 1);
    assert_eq!(
        ctx.connect("10.77.2.2", 8080, 0.0)?,
        "connect-failed TimeoutError"
    );

    // An invalid policy is refused; the running one stays.
    std::fs::write(&policy_path, "[policy]\ndefault_action = \"maybe\"\n")?;
    gw.signal("HUP")?;
    let t = Instant::now();
    while ctx.metric("bulkhead_policy_reload_failures_total")? == 0 {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(5),
            "reload failure not counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ctx.metric("bulkhead_policy_version")?, 2);
    assert!(
        gw.child.try_wait()?.is_none(),
        "the gateway died on a bad policy"
    );

    // SIGTERM: exit 0, routing and state removed.
    gw.signal("TERM")?;
    let status = gw.wait_exit(Duration::from_secs(10))?;
    assert!(status.success(), "exit status {status}");
    let rules = ctx.gateway_rules()?;
    assert!(!rules.contains("lookup 100"), "{rules}");
    assert!(!dir.path().join("state/routing-state.json").exists());

    // The decision log holds the decisions, the cut and the flow ends.
    let recs = records(&dir.path().join("decisions.jsonl"))?;
    let has = |f: &dyn Fn(&serde_json::Value) -> bool| recs.iter().any(f);
    assert!(has(&|r| r["reason"] == "rule"
        && r["action"] == "Allowed"
        && r["policy"]["name"] == "clients-to-servers"
        && r["dst_endpoint"]["port"] == 8080
        && r["gateway_id"] == "tun-runtime-test"));
    assert!(has(
        &|r| r["reason"] == "default" && r["dst_endpoint"]["port"] == 9090
    ));
    assert!(has(&|r| r["reason"] == "policy_update"
        && r["action"] == "Denied"
        && r["policy"]["version"] == 2));
    assert!(has(&|r| r["activity_id"] == 2));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    for r in &recs {
        let t = r["time"].as_u64().context("time")?;
        assert!(
            t <= now_ms && t > now_ms - 600_000,
            "record time {t} is not wall-clock"
        );
    }
    drop(server);
    Ok(())
}
