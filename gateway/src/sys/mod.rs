//! The only place in the gateway where `unsafe` code is allowed: thin wrappers over the Linux
//! system calls the runtime needs. Every unsafe block carries a `// SAFETY:` note.
#![allow(unsafe_code)]

pub mod alloc;
pub mod netlink;
pub mod tun;

/// Restores the default action of SIGPIPE, so a command whose output is piped into a program
/// that stops reading early (`bulkhead replay ... | head`) ends quietly, as Unix tools do, instead
/// of failing on a broken pipe. Only for the one-shot commands: the daemon keeps Rust's default
/// (SIGPIPE ignored, EPIPE reported as an error) so a closed log pipe never kills it.
pub fn default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler code; it is called before any other
    // thread exists (first thing in the one-shot commands), so no thread observes a half-changed
    // disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
