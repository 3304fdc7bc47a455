//! Where the binaries under test are.
//!
//! Inside the gateway package a test can use `env!("CARGO_BIN_EXE_bulkhead")`, but Cargo only
//! sets that for the package that owns the binary. The cross-crate tests (`tests/`) and the
//! throughput harness find it here instead:
//!
//! 1. in the directory named by `BULKHEAD_BIN_DIR`, when that variable is set (a release build,
//!    an installed binary);
//! 2. otherwise in the target directory the running executable was built into: a test executable
//!    lives in `target/<profile>/deps/`, a binary in `target/<profile>/`, and Cargo puts the
//!    `bulkhead` binary of the same build in `target/<profile>/`.
//!
//! `cargo test --workspace` builds the `bulkhead` binary before it runs any test (the gateway
//! package has integration tests, so Cargo builds its binary). `cargo test -p bulkhead-tests`
//! alone does not: build it first with `cargo build -p bulkhead-gateway`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::LabError;

/// The environment variable that names the directory holding the binaries.
pub const BIN_DIR_ENV: &str = "BULKHEAD_BIN_DIR";

/// The path of binary `name` (e.g. `"bulkhead"`), or an error that says how to build it.
pub fn find(name: &str) -> Result<PathBuf, LabError> {
    let exe =
        std::env::current_exe().map_err(|e| LabError::io("locate the running executable", e))?;
    let env_dir = std::env::var_os(BIN_DIR_ENV);
    let Some(path) = candidate(name, env_dir.as_deref(), &exe) else {
        return Err(LabError::Other(format!(
            "cannot tell where {name} is from the running executable {}; set {BIN_DIR_ENV}",
            exe.display()
        )));
    };
    if path.is_file() {
        return Ok(path);
    }
    let origin = if env_dir.as_ref().is_some_and(|d| !d.is_empty()) {
        format!(" ({BIN_DIR_ENV} is set)")
    } else {
        String::new()
    };
    Err(LabError::Other(format!(
        "no {name} binary at {}{origin}: build it first: cargo build -p bulkhead-gateway; \
         `cargo test --workspace` builds it",
        path.display()
    )))
}

/// Like [`find`], for tests: panics with the same explanation when the binary is absent (the
/// panic names the caller's line, not this one).
#[track_caller]
pub fn path(name: &str) -> PathBuf {
    match find(name) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// Where binary `name` should be: in `env_dir` when it is set and not empty, else in the
/// profile directory of `exe` (its own directory, or the parent of a `deps` directory).
fn candidate(name: &str, env_dir: Option<&std::ffi::OsStr>, exe: &Path) -> Option<PathBuf> {
    let file: OsString = format!("{name}{}", std::env::consts::EXE_SUFFIX).into();
    if let Some(dir) = env_dir.filter(|d| !d.is_empty()) {
        return Some(Path::new(dir).join(file));
    }
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?;
    }
    Some(dir.join(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn a_test_executable_finds_binaries_in_its_profile_directory() {
        let exe = Path::new("/w/target/debug/deps/e2e_gateway-0123abcd");
        assert_eq!(
            candidate("bulkhead", None, exe),
            Some(PathBuf::from("/w/target/debug/bulkhead"))
        );
    }

    #[test]
    fn a_binary_finds_its_siblings() {
        let exe = Path::new("/w/target/release/throughput");
        assert_eq!(
            candidate("bulkhead", None, exe),
            Some(PathBuf::from("/w/target/release/bulkhead"))
        );
    }

    #[test]
    fn the_environment_overrides_and_an_empty_value_does_not() {
        let exe = Path::new("/w/target/debug/deps/t");
        assert_eq!(
            candidate("bulkhead", Some(OsStr::new("/opt/bh/bin")), exe),
            Some(PathBuf::from("/opt/bh/bin/bulkhead"))
        );
        assert_eq!(
            candidate("bulkhead", Some(OsStr::new("")), exe),
            Some(PathBuf::from("/w/target/debug/bulkhead"))
        );
    }

    #[test]
    fn an_absent_binary_is_an_error_that_says_how_to_build_it() {
        let err = find("bulkhead-no-such-binary").unwrap_err().to_string();
        assert!(err.contains("cargo build -p bulkhead-gateway"), "{err}");
        assert!(err.contains("bulkhead-no-such-binary"), "{err}");
    }
}
