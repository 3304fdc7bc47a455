//! Network namespaces and process control for [`crate::netlab`] and `bulkhead demo`.
//!
//! A named network namespace is the bind mount `ip netns add NAME` leaves at
//! `/run/netns/NAME`. [`enter`] moves the *calling thread* into it with `setns(2)`: every
//! socket that thread creates afterwards lives in that namespace (and keeps living there, whichever
//! thread later uses it). [`run_in`] wraps that in a fresh thread so the caller's own namespace
//! never changes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

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
    // SAFETY: `file` is an open file descriptor owned by this function and alive for the whole
    // call; setns(2) only reads it and changes the calling thread's network namespace. No memory
    // is passed to the kernel.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
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
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Hup => libc::SIGHUP,
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Sends `signal` to the process `pid` (a child this process started).
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours; a positive pid addresses
    // exactly one process (never a process group or every process).
    let rc = unsafe { libc::kill(pid, signal.raw()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    fn refuses_pid_zero() {
        assert!(send_signal(0, Signal::Hup).is_err());
    }
}
