//! Snapshots at the gateway's edge: conversion from the wire into the policy model, compilation
//! off the packet path, and the last-known-good file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use control_proto::convert::policy_from_proto;
use control_proto::v1;
use policy_engine::{CompiledPolicy, Policy};
use prost::Message;

/// Largest snapshot accepted, on the wire and on disk.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// The file, in the state directory, that holds the last snapshot applied and acknowledged.
pub const LAST_KNOWN_GOOD: &str = "controller-snapshot.pb";

/// A snapshot that converted and validated: every reference resolves, every CIDR and pattern
/// parses. Built with `ValidSnapshot::try_from(wire)`.
#[derive(Debug, Clone)]
pub struct ValidSnapshot {
    /// The controller's version.
    pub version: u64,
    /// The controller's digest of the content.
    pub digest: String,
    /// The policy.
    pub policy: Arc<Policy>,
    /// The snapshot as received, kept to be written as last-known-good.
    pub wire: v1::Snapshot,
}

impl TryFrom<v1::Snapshot> for ValidSnapshot {
    type Error = Vec<String>;

    /// Every error of the snapshot, each as "LOCATION: MESSAGE".
    fn try_from(wire: v1::Snapshot) -> Result<ValidSnapshot, Vec<String>> {
        if wire.version == 0 {
            return Err(vec!["snapshot: version 0 is not a version".to_string()]);
        }
        let Some(policy) = wire.policy.as_ref() else {
            return Err(vec!["snapshot: no policy".to_string()]);
        };
        let policy = policy_from_proto(policy).map_err(|e| {
            e.0.into_iter()
                .map(|message| format!("snapshot {}: {message}", wire.version))
                .collect::<Vec<_>>()
        })?;
        Ok(ValidSnapshot {
            version: wire.version,
            digest: wire.digest.clone(),
            policy: Arc::new(policy),
            wire,
        })
    }
}

impl ValidSnapshot {
    /// Compiles the policy; call off the packet path (it may take a while for large policies).
    pub fn compile(&self) -> CompiledPolicy {
        policy_engine::compile(&self.policy, self.version)
    }
}

/// Why the last-known-good file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid snapshot (damaged, or from an incompatible controller).
    #[error("{path}: not a valid snapshot: {}", .errors.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error.
        errors: Vec<String>,
    },
}

/// Reads the last-known-good snapshot of `state_dir`; `Ok(None)` when there is none.
pub fn load_last_known_good(state_dir: &Path) -> Result<Option<ValidSnapshot>, SnapshotFileError> {
    let path = state_dir.join(LAST_KNOWN_GOOD);
    let io = |source| SnapshotFileError::Io {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SNAPSHOT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let invalid = |errors| SnapshotFileError::Invalid {
        path: path.clone(),
        errors,
    };
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(invalid(vec![format!(
            "larger than {MAX_SNAPSHOT_BYTES} bytes"
        )]));
    }
    let wire = v1::Snapshot::decode(bytes.as_slice()).map_err(|e| invalid(vec![e.to_string()]))?;
    ValidSnapshot::try_from(wire).map(Some).map_err(invalid)
}

/// Writes `snapshot` as the last-known-good: a temporary file, fsync, rename over the old one,
/// fsync of the directory. A crash at any point leaves either the old file or the new one.
pub fn store_last_known_good(
    state_dir: &Path,
    snapshot: &v1::Snapshot,
) -> Result<(), SnapshotFileError> {
    let path = state_dir.join(LAST_KNOWN_GOOD);
    let tmp = state_dir.join(format!("{LAST_KNOWN_GOOD}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotFileError::Io { path: p, source }
    };
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&snapshot.encode_to_vec())
        .map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(version: u64) -> v1::Snapshot {
        let loaded = policy_engine::load_policy_str(
            "[policy]\ndefault_action = \"deny\"\n[smartgroups.a]\ncidrs = [\"10.0.0.0/8\"]\n\
             [[rules]]\nname = \"r\"\npriority = 1\nsrc = [\"a\"]\ndst = \"any\"\naction = \"permit\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        v1::Snapshot {
            version,
            nonce: "n".into(),
            policy: Some(control_proto::convert::policy_to_proto(&loaded.policy)),
            digest: "d".into(),
        }
    }

    #[test]
    fn last_known_good_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_last_known_good(dir.path()).unwrap().is_none());
        store_last_known_good(dir.path(), &wire(4)).unwrap();
        let back = load_last_known_good(dir.path()).unwrap().unwrap();
        assert_eq!(back.version, 4);
        assert_eq!(back.compile().version(), 4);
        std::fs::write(dir.path().join(LAST_KNOWN_GOOD), b"\xff\xff garbage").unwrap();
        assert!(matches!(
            load_last_known_good(dir.path()),
            Err(SnapshotFileError::Invalid { .. })
        ));
    }

    #[test]
    fn invalid_snapshots_list_every_error() {
        let mut bad = wire(2);
        let policy = bad.policy.as_mut().unwrap();
        policy.rules[0].src = vec!["nobody".into()];
        policy.smartgroups[0].cidrs.push("garbage".into());
        let errors = ValidSnapshot::try_from(bad).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("`garbage` is not a CIDR"), "{all}");
        assert!(all.contains("src `nobody` is no smartgroup"), "{all}");
        assert!(ValidSnapshot::try_from(wire(0)).is_err());
        let mut empty = wire(3);
        empty.policy = None;
        assert!(ValidSnapshot::try_from(empty).is_err());
    }
}
