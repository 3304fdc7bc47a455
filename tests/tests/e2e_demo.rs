//! End-to-end: `bulkhead demo` itself. It runs to completion with every connection as the policy
//! says and leaves nothing behind; Ctrl-C in the middle still removes everything; without root
//! it says so clearly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use bulkhead_lab::netns::{self, Signal};
use bulkhead_tests::e2e::*;

fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("bhdemo-{pid}-");
    std::fs::read_dir(netns::NETNS_RUN_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn demo_runs_as_the_policy_says_and_cleans_up() -> Result<()> {
    if !root_or_skip("demo_runs_as_the_policy_says_and_cleans_up") {
        return Ok(());
    }
    let child = Command::new(bulkhead_bin())
        .args(["demo", "--deny-timeout", "1.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "demo failed: {}", out.status);
    assert!(!stdout.contains("MISMATCH"));
    assert!(stdout.contains("Every connection behaved as the policy says."));
    for rule in [
        "prod-agents-to-bedrock",
        "prod-agents-other-ai",
        "block-c2",
        "watch-dev-to-anthropic",
        "policy_update",
    ] {
        assert!(stdout.contains(rule), "the output mentions {rule}");
    }
    assert!(
        namespaces_of(pid).is_empty(),
        "left behind: {:?}",
        namespaces_of(pid)
    );
    Ok(())
}

#[test]
fn demo_cleans_up_on_ctrl_c() -> Result<()> {
    if !root_or_skip("demo_cleans_up_on_ctrl_c") {
        return Ok(());
    }
    let mut child = Command::new(bulkhead_bin())
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Interrupt once the gateway runs (the lab is complete then).
    let started = wait_for(Duration::from_secs(60), || {
        rx.try_recv()
            .ok()
            .filter(|l| l.contains("gateway `bulkhead run` pid"))
    });
    assert!(started.is_some(), "the demo did not start its gateway");
    assert!(!namespaces_of(pid).is_empty());
    netns::send_signal(pid, Signal::Int)?;
    let status = wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the demo did not exit after Ctrl-C")
        });
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(
        namespaces_of(pid).is_empty(),
        "left behind: {:?}",
        namespaces_of(pid)
    );
    Ok(())
}

#[test]
fn demo_without_root_says_so() -> Result<()> {
    if !root_or_skip("demo_without_root_says_so") {
        return Ok(());
    }
    // Drop to an unprivileged user to see what a normal user sees.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bulkhead_bin())
        .arg("demo")
        .output();
    let Ok(out) = out else {
        eprintln!("SKIPPED demo_without_root_says_so: setpriv is not available");
        return Ok(());
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("setpriv:") {
        // setpriv itself failed, e.g. the binary sits under a directory `nobody` cannot enter.
        eprintln!("SKIPPED demo_without_root_says_so: cannot run the binary as nobody: {stderr}");
        return Ok(());
    }
    assert!(!out.status.success());
    assert!(stderr.contains("run it as root"), "{stderr}");
    Ok(())
}
