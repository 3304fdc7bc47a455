//! Reading policy and configuration files that an operator names: only regular files, bounded.
//!
//! A path that names a FIFO without a writer would block `open` forever, a device such as
//! `/dev/zero` would be read without end, and a directory cannot be read at all. Files are opened
//! with `O_NONBLOCK` (so opening a FIFO returns at once), their type is then checked on the open
//! descriptor (no race with a rename between a check and the open), and at most a given number of
//! bytes is read. The flag is harmless for the regular file that remains.
//!
//! This is the one implementation: the policy loader reads the policy file and its includes
//! through it, and the gateway and the controller read their configuration and policy files
//! through it too. It uses the standard library only.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

/// `O_NONBLOCK` for `open(2)` on this target. The standard library has no name for it; the
/// values are the kernel's (the gateway's tests compare this with the C library's).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const O_NONBLOCK: i32 = if cfg!(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
)) {
    0x80
} else if cfg!(target_arch = "sparc64") {
    0x4000
} else {
    0o4000
};

/// `O_NONBLOCK` for `open(2)` on this target (the BSDs and macOS).
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
pub const O_NONBLOCK: i32 = 0x4;

/// Opens `path` for reading only if it is a regular file (symbolic links are followed).
///
/// The error says what the path is instead ("a directory", "not a regular file (a FIFO, socket
/// or device)").
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{kind}; refusing to read it"),
        ));
    }
    Ok(file)
}

/// Reads a regular file of at most `max_bytes` bytes as UTF-8 text.
pub fn read_regular_text(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let file = open_regular(path)?;
    let mut text = String::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max_bytes} bytes; refusing to read it"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on its own thread and fails the test if it has not returned within 5 s (a
    /// blocking open of a FIFO never would).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the read did not return: it blocked")
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = within_5s(move || read_regular_text(&fifo, 100).unwrap_err());
        assert!(err.to_string().contains("FIFO"), "{err}");
        let d = dir.path().to_path_buf();
        let err = within_5s(move || read_regular_text(&d, 100).unwrap_err());
        assert!(err.to_string().contains("directory"), "{err}");
        let err = within_5s(|| read_regular_text(Path::new("/dev/zero"), 100).unwrap_err());
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let file = dir.path().join("f");
        std::fs::write(&file, "0123456789").unwrap();
        assert_eq!(read_regular_text(&file, 10).unwrap(), "0123456789");
        let err = read_regular_text(&file, 9).unwrap_err();
        assert!(err.to_string().contains("larger than 9 bytes"), "{err}");
        // A symbolic link to a regular file is followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_regular_text(&link, 10).unwrap(), "0123456789");
    }
}
