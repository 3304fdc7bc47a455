//! iperf3 as child processes inside the lab's namespaces, bounded in time.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::Interrupt;

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    pub fn spawn(mut cmd: Command, what: &str) -> anyhow::Result<ChildGuard> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({cmd:?})"))?;
        Ok(ChildGuard {
            child: Some(child),
            what: what.to_owned(),
        })
    }

    /// Waits for the child to exit, at most until `deadline`, checking `interrupt` every 50 ms.
    /// Returns its stdout; a child still running at the deadline is killed and is an error.
    pub fn wait_output(
        mut self,
        deadline: Instant,
        interrupt: &Interrupt,
    ) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
        let mut child = self.child.take().expect("child present until waited for");
        loop {
            if let Some(_status) = child.try_wait().context("waiting for a child")? {
                let out = child
                    .wait_with_output()
                    .context("reading a child's output")?;
                return Ok((
                    out.status,
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ));
            }
            if interrupt.is_set() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                if interrupt.is_set() {
                    bail!("interrupted while {} ran", self.what);
                }
                bail!("{} did not finish in time and was killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `ip netns exec NS PROGRAM ARGS...`
pub fn in_netns(ns: &str, program: &str, args: &[String]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.arg("netns").arg("exec").arg(ns).arg(program).args(args);
    cmd
}

/// Starts an iperf3 server in namespace `ns`, listening on `bind:port`. It serves tests one
/// after the other until dropped.
pub fn start_server(ns: &str, bind: IpAddr, port: u16) -> anyhow::Result<ChildGuard> {
    let args = vec![
        "-s".to_owned(),
        "-B".to_owned(),
        bind.to_string(),
        "-p".to_owned(),
        port.to_string(),
    ];
    let mut cmd = in_netns(ns, "iperf3", &args);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    ChildGuard::spawn(cmd, "the iperf3 server")
}

/// Runs an iperf3 TCP test from namespace `ns` to `server:port` with `streams` parallel
/// streams for `seconds`, and returns the received bits per second.
pub fn run_client(
    ns: &str,
    server: IpAddr,
    port: u16,
    streams: u32,
    seconds: u32,
    interrupt: &Interrupt,
) -> anyhow::Result<f64> {
    let args = vec![
        "-c".to_owned(),
        server.to_string(),
        "-p".to_owned(),
        port.to_string(),
        "-P".to_owned(),
        streams.to_string(),
        "-t".to_owned(),
        seconds.to_string(),
        "--connect-timeout".to_owned(),
        "3000".to_owned(),
        "-J".to_owned(),
    ];
    let mut cmd = in_netns(ns, "iperf3", &args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = ChildGuard::spawn(cmd, "the iperf3 client")?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 20);
    let (status, stdout, stderr) = child.wait_output(deadline, interrupt)?;
    let bps = parse_received_bps(&stdout);
    match bps {
        Ok(v) if status.success() => Ok(v),
        Ok(_) => bail!("iperf3 client exited with {status}: {}", stderr.trim()),
        Err(e) => Err(e.context(format!(
            "iperf3 client exited with {status}: {}",
            stderr.trim()
        ))),
    }
}

/// Reads `end.sum_received.bits_per_second` from iperf3's JSON output (`-J`).
pub fn parse_received_bps(json: &str) -> anyhow::Result<f64> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .context("iperf3 output has no end.sum_received.bits_per_second")?;
    if !bps.is_finite() || bps <= 0.0 {
        bail!("iperf3 reported {bps} bit/s");
    }
    Ok(bps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf3_json() {
        let json = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bits_per_second":9.9e9},
            "sum_received":{"bits_per_second":9.5e9}}}"#;
        assert_eq!(parse_received_bps(json).unwrap(), 9.5e9);
    }

    #[test]
    fn reports_iperf3_errors() {
        let json = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server"}"#;
        let err = parse_received_bps(json).unwrap_err().to_string();
        assert!(err.contains("unable to connect"), "{err}");
        assert!(parse_received_bps("not json").is_err());
        assert!(parse_received_bps(r#"{"end":{"sum_received":{"bits_per_second":0}}}"#).is_err());
    }
}
