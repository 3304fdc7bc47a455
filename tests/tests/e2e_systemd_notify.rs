//! End-to-end: the daemon speaks systemd's notification protocol the way `Type=notify` with
//! `WatchdogSec=` needs (image/bulkhead.service). The test plays systemd: it listens on a
//! datagram socket, hands its path to the gateway as `NOTIFY_SOCKET` with a `WATCHDOG_USEC`,
//! and checks that
//!
//! - `READY=1` arrives only once a policy is enforced (`/readyz` answers 200 at that moment), and
//!   not at all while the gateway denies everything waiting for its controller: it comes when
//!   the controller's first snapshot is applied;
//! - `WATCHDOG=1` arrives every half interval while the workers make progress, stops when one
//!   packet worker stops (the thread is frozen with `PTRACE_INTERRUPT`, the rest of the process
//!   runs on), and resumes when it runs again;
//! - `STOPPING=1` arrives on SIGTERM.
//!
//! Root only.

// ptrace(2) freezes one worker thread; libc has no safe wrapper for it.
#![allow(unsafe_code)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_lab::gateway::{http_get_blocking, GatewaySpec, METRICS_LISTEN};
use bulkhead_lab::netns;
use bulkhead_tests::control_plane::{metric, Fleet};
use bulkhead_tests::e2e::*;

/// The two tests each run a gateway with timing assertions: one at a time on small machines.
static SERIAL: Mutex<()> = Mutex::new(());

const RULES: &str = r#"
[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;

/// One notification, when it arrived, and (for READY=1) what `/readyz` answered right then.
#[derive(Debug, Clone)]
struct Note {
    at: Instant,
    text: String,
    readyz_then: Option<u16>,
}

/// The test's side of `NOTIFY_SOCKET`: a thread that records every datagram. On `READY=1` it
/// asks the gateway's `/readyz` at once, from inside the gateway namespace.
struct Listener {
    notes: Arc<Mutex<Vec<Note>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn bind(path: &Path, gateway_netns: &str) -> Listener {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path).expect("bind the notification socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (n, s, ns) = (notes.clone(), stop.clone(), gateway_netns.to_owned());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(len) = socket.recv(&mut buf) else {
                    continue;
                };
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                let readyz_then = text.lines().any(|l| l == "READY=1").then(|| {
                    netns::run_in(&ns, || http_get_blocking(METRICS_LISTEN, "/readyz"))
                        .ok()
                        .and_then(|r| r.ok())
                        .map_or(0, |(status, _)| status)
                });
                n.lock().unwrap().push(Note {
                    at,
                    text,
                    readyz_then,
                });
            }
        });
        Listener {
            notes,
            stop,
            thread: Some(thread),
        }
    }

    fn notes(&self) -> Vec<Note> {
        self.notes.lock().unwrap().clone()
    }

    fn with(&self, line: &str) -> Vec<Note> {
        self.notes()
            .into_iter()
            .filter(|n| n.text.lines().any(|l| l == line || l.starts_with(line)))
            .collect()
    }

    fn wait_for(&self, line: &str, timeout: Duration) -> Option<Note> {
        wait_for(timeout, || self.with(line).into_iter().next())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn notify_env(socket: &Path, watchdog: Duration) -> Vec<(String, String)> {
    vec![
        ("NOTIFY_SOCKET".into(), socket.display().to_string()),
        ("WATCHDOG_USEC".into(), watchdog.as_micros().to_string()),
    ]
}

/// The thread id of the gateway's thread named `name`.
fn thread_id(pid: u32, name: &str) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        (comm.trim() == name)
            .then(|| t.file_name().to_str()?.parse().ok())
            .flatten()
    })
}

/// One thread of another process, stopped with `PTRACE_SEIZE` + `PTRACE_INTERRUPT` (which stop
/// that thread only, unlike SIGSTOP) until dropped. Must be dropped on the thread that made it.
struct Frozen(i32);

impl Frozen {
    fn thread(tid: i32) -> std::io::Result<Frozen> {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: plain system calls on a thread id; no memory is passed (null address and data).
        let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, null, null) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above; the thread is now our tracee.
        let rc = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if rc != tid {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Frozen(tid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaches our stopped tracee; no memory is passed.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, null, null) };
    }
}

#[test]
fn ready_once_enforcing_and_the_watchdog_follows_the_workers() {
    if !root_or_skip("ready_once_enforcing_and_the_watchdog_follows_the_workers") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tb = testbed();
    let socket = tb.lab.workdir().join("notify.sock");
    let listener = Listener::bind(&socket, tb.lab.gateway_netns());
    let mut spec = GatewaySpec::new(bulkhead_bin(), &policy("enforce", RULES));
    spec.queues = 2;
    let watchdog = Duration::from_secs(1);
    spec.env = notify_env(&socket, watchdog);
    let mut gw = start_gateway_with(&tb, spec);

    let ready = listener
        .wait_for("READY=1", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no READY=1; got {:?}", listener.notes()));
    assert_eq!(
        ready.readyz_then,
        Some(200),
        "READY=1 came before /readyz answered 200"
    );
    assert!(
        ready
            .text
            .contains("STATUS=enforcing policy version 1 (file)"),
        "{ready:?}"
    );
    assert!(
        listener.with("WATCHDOG=1").iter().all(|n| n.at >= ready.at),
        "a watchdog ping came before READY=1: {:?}",
        listener.notes()
    );

    // Pings every half interval while the workers run.
    std::thread::sleep(Duration::from_secs(3));
    let pings = listener.with("WATCHDOG=1").len();
    assert!(
        (4..=10).contains(&pings),
        "{pings} pings in about 3 s with a 1 s watchdog: {:?}",
        listener.notes()
    );

    // Freeze worker 1: the rest of the process (control thread, worker 0, /healthz) runs on,
    // but the pings must stop within the stall limit (1 s here) and a status must say why.
    let tid = thread_id(gw.pid(), "bulkhead-w1").expect("worker thread bulkhead-w1");
    let frozen_at = Instant::now();
    let frozen = Frozen::thread(tid).expect("ptrace the worker thread");
    let stalled = listener
        .wait_for("STATUS=worker 1 made no progress", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no stall status; got {:?}", listener.notes()));
    // Not before the stall limit (1 s) less how stale the last heartbeat the supervisor saw
    // can be: the worker's idle wake-up (200 ms) and the supervisor's tick (50 ms).
    assert!(
        stalled.at >= frozen_at + Duration::from_millis(750),
        "stall reported {:?} after the freeze",
        stalled.at.duration_since(frozen_at)
    );
    assert!(matches!(gw.http_get("/healthz"), Ok((200, _))));
    let quiet_from = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let late: Vec<_> = listener
        .with("WATCHDOG=1")
        .into_iter()
        .filter(|n| n.at > quiet_from)
        .collect();
    assert!(
        late.is_empty(),
        "pings went on with a frozen worker: {late:?}"
    );
    let last_ping = listener.with("WATCHDOG=1").last().unwrap().at;
    assert!(
        last_ping <= frozen_at + Duration::from_millis(1600),
        "the last ping came {:?} after the worker froze",
        last_ping.duration_since(frozen_at)
    );

    // Thawed, it makes progress again and the pings resume.
    drop(frozen);
    let thawed_at = Instant::now();
    assert!(
        wait_for(Duration::from_secs(3), || {
            listener
                .with("WATCHDOG=1")
                .into_iter()
                .find(|n| n.at > thawed_at)
        })
        .is_some(),
        "no ping after the worker ran again: {:?}",
        listener.notes()
    );

    gw.stop(Duration::from_secs(10)).expect("stop the gateway");
    assert!(
        listener
            .wait_for("STOPPING=1", Duration::from_secs(2))
            .is_some(),
        "no STOPPING=1: {:?}",
        listener.notes()
    );
}

#[test]
fn no_ready_while_denying_everything_until_the_controller_serves_a_policy() {
    if !root_or_skip("no_ready_while_denying_everything_until_the_controller_serves_a_policy") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut fleet = Fleet::build(1);
    fleet.start_controller();
    let socket = fleet.labs[0].workdir().join("notify.sock");
    let listener = Listener::bind(&socket, fleet.labs[0].gateway_netns());
    let mut spec = fleet.gateway_spec(1, "");
    spec.policy_file = false;
    spec.wait_ready = false;
    spec.env = notify_env(&socket, Duration::from_secs(2));
    let gw = fleet.start_gateway(1, &spec);

    // Running, connected, denying everything: not ready, and systemd is told why.
    let status = listener
        .wait_for("STATUS=denying everything", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no deny-all status; got {:?}", listener.notes()));
    assert!(!status.text.contains("READY=1"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        listener.with("READY=1").is_empty() && listener.with("WATCHDOG=1").is_empty(),
        "READY or a ping while denying everything: {:?}",
        listener.notes()
    );
    assert!(matches!(gw.http_get("/readyz"), Ok((503, _))));

    let version = fleet.push(&policy("enforce", RULES));
    let ready = listener
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no READY=1 after the push; got {:?}", listener.notes()));
    assert_eq!(ready.readyz_then, Some(200));
    assert!(
        ready.text.contains(&format!(
            "STATUS=enforcing policy version {version} (controller)"
        )),
        "{ready:?}"
    );
    assert_eq!(
        metric(&gw, "bulkhead_policy_version", &[]),
        Some(version as f64)
    );
    assert!(listener
        .wait_for("WATCHDOG=1", Duration::from_secs(3))
        .is_some());
    drop(gw);
}
