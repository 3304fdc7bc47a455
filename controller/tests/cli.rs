//! The real `bulkheadctl` binary: certs, serve, push, status, history, rollback, exit codes.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_bulkheadctl");

const POLICY: &str =
    "[policy]\ndefault_action = \"deny\"\n[smartgroups.a]\ncidrs = [\"10.0.0.0/8\"]\n\
    [[rules]]\nname = \"r\"\npriority = 1\nsrc = [\"a\"]\ndst = \"any\"\naction = \"permit\"\n";

fn ctl(dir: &Path, port: u16, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("BULKHEAD_CONTROLLER", format!("https://127.0.0.1:{port}"))
        .env("BULKHEAD_CA", "pki/ca.pem")
        .env("BULKHEAD_CERT", "pki/operator-alice.pem")
        .env("BULKHEAD_KEY", "pki/operator-alice.key")
        .output()
        .unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bulkheadctl_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(d)
            .output()
            .unwrap()
    };
    assert!(run(&["certs", "init", "pki"]).status.success());
    assert!(run(&[
        "certs",
        "issue",
        "pki",
        "--controller",
        "127.0.0.1",
        "localhost"
    ])
    .status
    .success());
    assert!(run(&["certs", "issue", "pki", "--operator", "alice"])
        .status
        .success());
    assert!(run(&["certs", "issue", "pki", "--gateway", "g1"])
        .status
        .success());
    assert_eq!(run(&["certs", "issue", "pki"]).status.code(), Some(2));
    assert_eq!(
        run(&["certs", "issue", "pki", "--gateway", "a", "--operator", "b"])
            .status
            .code(),
        Some(2)
    );

    let port = free_port();
    std::fs::write(
        d.join("controller.toml"),
        format!(
            "[controller]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\n"
        ),
    )
    .unwrap();
    // Unreachable before the server runs: exit 3.
    assert_eq!(ctl(d, port, &["status"]).status.code(), Some(3));
    let _server = Server(
        Command::new(BIN)
            .args(["serve", "--config", "controller.toml"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..100 {
        if ctl(d, port, &["status"]).status.success() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "the controller did not come up");

    std::fs::write(d.join("p.toml"), POLICY).unwrap();
    std::fs::write(d.join("bad.toml"), "[policy]\ndefault_action = \"maybe\"\n").unwrap();
    let out = ctl(d, port, &["push", "p.toml"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let out = ctl(d, port, &["push", "bad.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:2:"));
    assert_eq!(
        ctl(d, port, &["push", "missing.toml"]).status.code(),
        Some(2)
    );
    assert_eq!(
        json(&ctl(d, port, &["rollback", "1", "--json"]))["version"],
        2
    );
    assert_eq!(ctl(d, port, &["rollback", "42"]).status.code(), Some(1));
    assert_eq!(ctl(d, port, &["rollback", "x"]).status.code(), Some(2));

    let status = json(&ctl(d, port, &["status", "--json"]));
    assert_eq!(status["version"], 2);
    assert!(status["gateways"].as_array().unwrap().is_empty());
    let history = json(&ctl(d, port, &["history", "--json"]));
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(versions[0]["origin"], "rollback");
    assert_eq!(versions[1]["origin"], "push");
    assert_eq!(versions[1]["operator"], "alice");
    assert_eq!(versions[0]["digest"], versions[1]["digest"]);
    assert!(versions[0]["time"].as_str().unwrap().ends_with('Z'));
    let report = json(&ctl(d, port, &["report", "--since", "1h", "--json"]));
    assert!(report["rows"].as_array().unwrap().is_empty());
    assert_eq!(
        ctl(d, port, &["report", "--since", "soon"]).status.code(),
        Some(2)
    );

    // A gateway certificate is refused on the operator API: exit 3.
    let out = Command::new(BIN)
        .args([
            "status",
            "--cert",
            "pki/gateway-g1.pem",
            "--key",
            "pki/gateway-g1.key",
        ])
        .current_dir(d)
        .env("BULKHEAD_CONTROLLER", format!("https://127.0.0.1:{port}"))
        .env("BULKHEAD_CA", "pki/ca.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // Missing connection settings: a usage error.
    let out = Command::new(BIN)
        .args(["status"])
        .current_dir(d)
        .env_remove("BULKHEAD_CONTROLLER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
