//! Regression tests for defects found with hostile input: a TUN device shared by two gateways,
//! a policy reload that blocked the daemon, special files read as configuration or policy.
//!
//! The daemon tests need root (a network namespace of their own and `/dev/net/tun`); they are
//! skipped, saying so, without it. Everything they create lives in that namespace, which is
//! deleted at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

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

fn can_run_daemon(test: &str) -> bool {
    let ok = is_root() && Path::new("/dev/net/tun").exists() && have("ip") && have("curl");
    if !ok {
        eprintln!("SKIPPED {test}: needs root, /dev/net/tun, iproute2 and curl");
    }
    ok
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mkfifo(path: &Path) -> Result<()> {
    let st = Command::new("mkfifo").arg(path).status()?;
    anyhow::ensure!(st.success(), "mkfifo {}", path.display());
    Ok(())
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Result<Netns> {
        let name = format!("bhh{tag}{}", std::process::id());
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns(name);
        sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn curl(&self, url: &str) -> Result<(String, Duration)> {
        let started = Instant::now();
        let out = sh(&[
            "ip", "netns", "exec", &self.0, "curl", "-sS", "-m", "10", url,
        ])?;
        Ok((out, started.elapsed()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A `bulkhead run` in a namespace; stderr goes to a file. Killed (by its pid) on drop.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(ns: &Netns, config: &Path) -> Result<Daemon> {
        let stderr = config.with_extension(format!("stderr.{}", rand_suffix()));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, BIN, "run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        Ok(Daemon { child, stderr })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, or fails after `limit`.
    fn wait_log(&mut self, needle: &str, limit: Duration) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("daemon exited ({st}) before `{needle}`:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("no `{needle}` within {limit:?}:\n{}", self.log())
    }

    /// Waits for the process to exit; None if it is still running after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(st) = self.child.try_wait()? {
                return Ok(Some(st));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    fn signal(&self, sig: &str) -> Result<()> {
        sh(&["kill", &format!("-{sig}"), &self.child.id().to_string()]).map(|_| ())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A gateway configuration in `dir`, with metrics on `port`; `extra_gateway` is added to
/// `[gateway]`, `policy` to `[policy]`.
fn write_config(
    dir: &Path,
    name: &str,
    tun: &str,
    port: u16,
    extra_gateway: &str,
    policy: &str,
) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[gateway]\nid = \"hardening\"\ntun = \"{tun}\"\nqueues = 2\n{extra_gateway}\n\
         [policy]\nstate_dir = \"state\"\n{policy}\n\
         [log]\ndecisions = \"decisions.jsonl\"\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

const POLICY: &str = "[policy]\ndefault_action = \"deny\"\n";

#[test]
fn a_second_gateway_does_not_join_a_running_gateways_tun() -> Result<()> {
    if !can_run_daemon("a_second_gateway_does_not_join_a_running_gateways_tun") {
        return Ok(());
    }
    let ns = Netns::new("a")?;
    let dir = tempfile::tempdir()?;
    let first = write_config(dir.path(), "a.toml", "bkh0", 9108, "", "");
    let mut a = Daemon::start(&ns, &first)?;
    a.wait_log("gateway running", Duration::from_secs(20))?;

    // Same TUN, its own metrics port: the TUN alone must make it refuse.
    for (name, extra) in [("b.toml", ""), ("c.toml", "adopt_existing_tun = true")] {
        let cfg = write_config(dir.path(), name, "bkh0", 9109, extra, "");
        let mut b = Daemon::start(&ns, &cfg)?;
        let st = b
            .wait_exit(Duration::from_secs(20))?
            .context("the second gateway kept running on the first one's TUN")?;
        assert!(!st.success(), "{name}: {st}");
        let log = b.log();
        let expected = if extra.is_empty() {
            "already exists"
        } else {
            "is in use"
        };
        assert!(log.contains(expected), "{name}: {log}");
    }
    // The first gateway is unharmed and stops cleanly.
    assert!(a.child.try_wait()?.is_none(), "{}", a.log());
    a.signal("TERM")?;
    let st = a.wait_exit(Duration::from_secs(10))?.context("no exit")?;
    assert!(st.success(), "{st}: {}", a.log());
    Ok(())
}

#[test]
fn a_persistent_tun_is_taken_over_only_when_configured() -> Result<()> {
    if !can_run_daemon("a_persistent_tun_is_taken_over_only_when_configured") {
        return Ok(());
    }
    let ns = Netns::new("p")?;
    let dir = tempfile::tempdir()?;
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "tuntap",
        "add",
        "mode",
        "tun",
        "multi_queue",
        "name",
        "bkh1",
    ])?;

    let refuse = write_config(dir.path(), "r.toml", "bkh1", 9108, "", "");
    let mut d = Daemon::start(&ns, &refuse)?;
    let st = d
        .wait_exit(Duration::from_secs(20))?
        .context("took the device over")?;
    assert!(!st.success());
    assert!(d.log().contains("already exists"), "{}", d.log());
    assert!(d.log().contains("adopt_existing_tun"), "{}", d.log());

    let adopt = write_config(
        dir.path(),
        "o.toml",
        "bkh1",
        9108,
        "adopt_existing_tun = true",
        "",
    );
    let mut d = Daemon::start(&ns, &adopt)?;
    d.wait_log("gateway running", Duration::from_secs(20))?;
    d.signal("TERM")?;
    let st = d.wait_exit(Duration::from_secs(10))?.context("no exit")?;
    assert!(st.success(), "{st}: {}", d.log());
    Ok(())
}

/// A policy of `rules` rules that takes seconds to load and compile (each rule its own port, so
/// none shadows another).
fn large_policy(rules: usize) -> String {
    let mut p = String::from(POLICY);
    p.push_str("[smartgroups.agents]\ncidrs = [\"10.1.0.0/16\"]\n");
    for g in 0..rules / 4 {
        p.push_str(&format!(
            "[webgroups.w{g}]\ndomains = [\"api{g}.example.com\", \"*.svc{g}.example.org\"]\n"
        ));
    }
    for r in 0..rules {
        p.push_str(&format!(
            "[[rules]]\nname = \"r{r}\"\npriority = {}\nsrc = [\"agents\"]\ndst = [\"w{}\"]\n\
             protocol = \"tcp\"\nports = [\"{}\"]\naction = \"permit\"\n",
            r + 1,
            r % (rules / 4),
            1000 + r
        ));
    }
    p
}

#[test]
fn a_long_reload_leaves_health_metrics_and_signals_responsive() -> Result<()> {
    if !can_run_daemon("a_long_reload_leaves_health_metrics_and_signals_responsive") {
        return Ok(());
    }
    let ns = Netns::new("r")?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let cfg = write_config(
        dir.path(),
        "g.toml",
        "bkh2",
        9108,
        "",
        "file = \"policy.toml\"\nload_timeout_ms = 300",
    );
    let mut d = Daemon::start(&ns, &cfg)?;
    d.wait_log("gateway running", Duration::from_secs(20))?;

    // A policy that takes longer to load than its bound: the control thread keeps serving.
    let large = large_policy(8000);
    std::fs::write(&policy, &large)?;
    d.signal("HUP")?;
    std::thread::sleep(Duration::from_millis(100));
    let (body, took) = ns.curl("http://127.0.0.1:9108/healthz")?;
    assert_eq!(body.trim(), "ok");
    assert!(
        took < Duration::from_secs(2),
        "/healthz took {took:?} during a reload"
    );
    d.wait_log("abandoned", Duration::from_secs(10))?;
    let (metrics, _) = ns.curl("http://127.0.0.1:9108/metrics")?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "bulkhead_policy_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "bulkhead_policy_version 1"),
        "{metrics}"
    );

    // An include that is a FIFO with no writer is refused, not read (that read never returns).
    mkfifo(&dir.path().join("catalog.toml"))?;
    std::fs::write(&policy, format!("{POLICY}include = [\"catalog.toml\"]\n"))?;
    d.signal("HUP")?;
    d.wait_log("cannot include", Duration::from_secs(5))?;
    // So is a policy path that is itself a FIFO.
    std::fs::remove_file(&policy)?;
    mkfifo(&policy)?;
    d.signal("HUP")?;
    d.wait_log(
        "cannot read the file: not a regular file",
        Duration::from_secs(5),
    )?;

    // SIGTERM while a long reload runs: the daemon still stops at once.
    std::fs::remove_file(&policy)?;
    std::fs::write(&policy, &large)?;
    d.signal("HUP")?;
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    d.signal("TERM")?;
    let st = d
        .wait_exit(Duration::from_secs(5))?
        .context("SIGTERM ignored during a reload")?;
    assert!(st.success(), "{st}: {}", d.log());
    assert!(started.elapsed() < Duration::from_secs(3));
    Ok(())
}

fn bulkhead(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("bulkhead runs")
}

/// Runs `bulkhead` with a deadline: a hang is a failure, not a stuck test.
fn bulkhead_within(args: &[&str], limit: Duration) -> Result<Output> {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("bulkhead {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

#[test]
fn special_files_are_refused_not_read() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo)?;
    let f = fifo.to_str().unwrap();
    let out = bulkhead_within(&["check-policy", f], Duration::from_secs(10))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    // An include that is a FIFO: the loader would wait for a writer forever. The error points
    // at the include's entry (line 3, column 12).
    let with_include = dir.path().join("p.toml");
    std::fs::write(
        &with_include,
        "[policy]\ndefault_action = \"deny\"\ninclude = [\"fifo.toml\"]\n",
    )?;
    let out = bulkhead_within(
        &["check-policy", with_include.to_str().unwrap()],
        Duration::from_secs(10),
    )?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.toml:3:12: error: cannot include"), "{err}");
    let out = bulkhead_within(&["run", "--check", "--config", f], Duration::from_secs(10))?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    let out = bulkhead_within(
        &[
            "explain",
            "--policy",
            f,
            "--src",
            "10.0.0.1",
            "--dst",
            "192.0.2.1:443",
        ],
        Duration::from_secs(10),
    )?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn check_policy_json_reports_errors_as_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[policy]\ndefault_action = \"maybe\"\n")?;
    let out = bulkhead(&["check-policy", "--json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!(e["line"], 2);
    assert_eq!(e["severity"], "error");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    // The same for explain --json.
    let out = bulkhead(&[
        "explain",
        "--json",
        "--policy",
        bad.to_str().unwrap(),
        "--src",
        "10.0.0.1",
        "--dst",
        "192.0.2.1:443",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["valid"], false);
    Ok(())
}

#[test]
fn explain_requires_a_bracketed_ipv6_destination_with_its_port() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("p.toml");
    std::fs::write(&p, POLICY)?;
    let p = p.to_str().unwrap();
    let explain = |dst: &str, extra: &[&str]| {
        let mut args = vec!["explain", "--policy", p, "--src", "10.0.0.1", "--dst", dst];
        args.extend_from_slice(extra);
        bulkhead(&args)
    };
    let out = explain("2001:db8::1:443", &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[2001:db8::1:443]:PORT"));
    let out = explain("192.0.2.1", &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = explain("2001:db8::1:443", &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["error"], true);
    assert!(explain("[2001:db8::1]:443", &[]).status.success());
    // Transports without ports take a bare address, bracketed or not.
    assert!(explain("2001:db8::1", &["--proto", "icmpv6"])
        .status
        .success());
    assert!(explain("[2001:db8::1]", &["--proto", "icmpv6"])
        .status
        .success());
    Ok(())
}

#[test]
fn invalid_log_filters_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("g.toml");
    std::fs::write(&cfg, "[gateway]\nid = \"g\"\n[log]\ndecisions = \"-\"\n")?;
    let c = cfg.to_str().unwrap();
    let out = bulkhead(&["run", "--check", "--config", c, "--log-level", "verbose"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a log level"));
    let out = Command::new(BIN)
        .args(["run", "--check", "--config", c])
        .env("RUST_LOG", "loud")
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUST_LOG"));
    let out = bulkhead(&[
        "run",
        "--check",
        "--config",
        c,
        "--log-level",
        "warn,h2=off",
    ]);
    assert!(out.status.success(), "{out:?}");
    Ok(())
}

#[test]
fn echoed_arguments_are_bounded_and_escaped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("p.toml");
    std::fs::write(&p, POLICY)?;
    let long = format!("{}\nbulkhead: error: forged", "9".repeat(100_000));
    for args in [
        vec![
            "explain",
            "--policy",
            p.to_str().unwrap(),
            "--src",
            "10.0.0.1",
            "--dst",
            &long,
        ],
        vec!["run", "--check", "--config", &long],
        vec!["run", "--check", "--config", "x", "--log-level", &long],
    ] {
        let out = bulkhead(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.len() < 2000,
            "{} bytes of error for {:?}",
            err.len(),
            &args[..2]
        );
        assert!(!err.contains("\nbulkhead: error: forged"), "{err}");
    }
    Ok(())
}
