//! The local policy: loaded at start, reloaded on SIGHUP.
//!
//! Versions: a policy loaded from the local file gets version 1 at start and the next integer at
//! every successful reload; the deny-all fallback (no file configured) is version 0. The version
//! is in every decision record (`policy.version`) and in `bulkhead_policy_version`.
//!
//! A reload is all or nothing: the file is read, validated and compiled off the packet path; any
//! error is logged (every one, with file, line and column), counted in
//! `bulkhead_policy_reload_failures_total`, and the running policy stays. On success the new
//! policy is swapped in atomically; workers notice the version change within one idle tick and
//! re-evaluate their established flows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use policy_engine::{
    compile, CompiledPolicy, Diagnostic, LoadError, LoadedPolicy, PolicyStore, Severity,
};

use crate::metrics::Metrics;

/// Where policies come from and which version comes next.
#[derive(Debug)]
pub struct PolicySource {
    file: Option<PathBuf>,
    next_version: u64,
}

/// What was loaded, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub version: u64,
    pub rules: usize,
    pub warnings: usize,
}

impl PolicySource {
    pub fn new(file: Option<PathBuf>) -> PolicySource {
        PolicySource {
            file,
            next_version: 1,
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The policy to start with: the file's, or deny-all when none is configured. An invalid
    /// file is an error (the daemon does not start on a policy it cannot read).
    pub fn initial(&mut self) -> Result<(CompiledPolicy, Loaded), LoadError> {
        match self.file.clone() {
            None => Ok((
                CompiledPolicy::deny_all(0),
                Loaded {
                    version: 0,
                    rules: 0,
                    warnings: 0,
                },
            )),
            Some(path) => self.load(&path),
        }
    }

    fn load(&mut self, path: &Path) -> Result<(CompiledPolicy, Loaded), LoadError> {
        let loaded = load_policy_file(path)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let version = self.next_version;
        self.next_version += 1;
        let compiled = compile(&loaded.policy, version);
        Ok((
            compiled,
            Loaded {
                version,
                rules: loaded.policy.rules.len(),
                warnings: loaded.warnings.len(),
            },
        ))
    }

    /// Reloads the file into `store`. Returns the new version, or None when the reload was
    /// refused (errors logged and counted) or there is no file to reload.
    pub fn reload(&mut self, store: &PolicyStore, metrics: &Metrics) -> Option<u64> {
        let Some(path) = self.file.clone() else {
            tracing::warn!("SIGHUP: no policy.file is configured; nothing to reload");
            return None;
        };
        match self.load(&path) {
            Ok((compiled, loaded)) => {
                let previous = store.store(compiled);
                tracing::info!(
                    file = %path.display(),
                    version = loaded.version,
                    previous = previous.version(),
                    rules = loaded.rules,
                    warnings = loaded.warnings,
                    "policy reloaded"
                );
                metrics.policy_applied(loaded.version, true);
                // The previous policy is dropped here, on the control thread.
                drop(previous);
                Some(loaded.version)
            }
            Err(err) => {
                for e in &err.errors {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    file = %path.display(),
                    errors = err.errors.len(),
                    running = store.version(),
                    "policy reload refused; the running policy stays"
                );
                metrics.policy_reload_failed();
                None
            }
        }
    }
}

/// Loads a policy file, refusing up front a path that is not a regular file.
///
/// The loader opens the file with a blocking `open`, which never returns for a FIFO without a
/// writer; checking here (with a non-blocking open) turns that hang into an error for the main
/// file. Includes are read by the loader itself.
pub fn load_policy_file(path: &Path) -> Result<LoadedPolicy, LoadError> {
    if let Err(e) = crate::input::open_regular(path) {
        return Err(LoadError {
            errors: vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("cannot read the file: {e}"),
            }],
            warnings: Vec::new(),
        });
    }
    policy_engine::load_policy_file(path)
}

/// A store holding `initial`, shared with the workers.
pub fn new_store(initial: CompiledPolicy) -> Arc<PolicyStore> {
    Arc::new(PolicyStore::new(initial))
}
