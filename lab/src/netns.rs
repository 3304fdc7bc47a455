//! Network namespaces and process control for the lab and `bulkhead demo`.
//!
//! A named network namespace is the bind mount `ip netns add NAME` leaves at
//! `/run/netns/NAME`. [`enter`] moves the *calling thread* into it with `setns(2)`: every
//! socket that thread creates afterwards lives in that namespace (and keeps living there, whichever
//! thread later uses it). [`run_in`] wraps that in a fresh thread so the caller's own namespace
//! never changes.
//!
//! The system calls go through rustix's safe wrappers, so this crate has no unsafe code.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::process::{Pid, Signal as RawSignal};
use rustix::thread::LinkNameSpaceType;

/// Where iproute2 keeps the bind mounts of named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The path of the named namespace's bind mount.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

/// Moves the calling thread into the named network namespace. Only this thread moves: other
/// threads of the process stay where they are. Fails if the namespace does not exist or the
/// process lacks `CAP_SYS_ADMIN`.
pub fn enter(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name {name:?}"),
        ));
    }
    let file = File::open(netns_path(name))?;
    // Naming the type makes the kernel refuse a file that is not a network namespace (a stray
    // file under /run/netns) instead of moving this thread into some other kind of namespace.
    rustix::thread::move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))?;
    Ok(())
}

/// Runs `f` on a new thread that first enters the named network namespace, and returns its
/// result. A panic inside `f` is turned into an error instead of being propagated.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = spawn_in(name, f)?;
    handle
        .join()
        .map_err(|_| io::Error::other("thread inside the network namespace panicked"))?
}

/// Spawns a thread that enters the named network namespace and then runs `f`. The join handle
/// yields an error if entering the namespace failed.
pub fn spawn_in<T, F>(name: &str, f: F) -> io::Result<std::thread::JoinHandle<io::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = name.to_owned();
    std::thread::Builder::new()
        .name(format!("netns-{}", truncate(&ns, 8)))
        .spawn(move || {
            enter(&ns)?;
            Ok(f())
        })
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// True when the process runs with effective user id 0 (what creating namespaces, veth pairs and
/// TUN devices needs).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Signals [`send_signal`] can deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reload (the gateway re-reads its policy).
    Hup,
    /// Graceful stop.
    Term,
    /// Interrupt (Ctrl-C).
    Int,
    /// Immediate stop.
    Kill,
}

impl Signal {
    fn raw(self) -> RawSignal {
        match self {
            Signal::Hup => RawSignal::HUP,
            Signal::Term => RawSignal::TERM,
            Signal::Int => RawSignal::INT,
            Signal::Kill => RawSignal::KILL,
        }
    }
}

/// Sends `signal` to the process `pid` (a child this process started).
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    // Only a positive pid addresses exactly one process: 0 and negative values would signal a
    // whole process group or every process, so they never reach kill(2).
    let pid = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    rustix::process::kill_process(pid, signal.raw())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_names_that_escape_the_directory() {
        for bad in ["", "a/b", "..", "."] {
            let err = enter(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn missing_namespace_is_an_error_not_a_panic() {
        let err = run_in("bulkhead-no-such-namespace-xyz", || 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn refuses_pids_that_address_more_than_one_process() {
        // 0 is the caller's process group; u32::MAX would be -1 (every process) as a pid_t.
        for pid in [0, u32::MAX, 1 << 31] {
            let err = send_signal(pid, Signal::Hup).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{pid}");
        }
    }

    #[test]
    fn a_namespace_of_another_kind_is_refused() {
        // A UTS namespace under the name: setns(2) would join it if the type were not named.
        // Needs root to write /run/netns; skipped (and said so) otherwise.
        if !is_root() {
            eprintln!("SKIPPED a_namespace_of_another_kind_is_refused: needs root");
            return;
        }
        std::fs::create_dir_all(NETNS_RUN_DIR).unwrap();
        let name = format!("bulkhead-not-a-netns-{}", std::process::id());
        let path = netns_path(&name);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink("/proc/self/ns/uts", &path).unwrap();
        let result = run_in(&name, || ());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
