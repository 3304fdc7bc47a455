//! The local policy: loaded at start, reloaded on SIGHUP.
//!
//! Versions: a policy loaded from the local file gets version 1 at start and the next integer at
//! every successful reload; the deny-all fallback (no file configured) is version 0. The version
//! is in every decision record (`policy.version`) and in `bulkhead_policy_version`.
//!
//! A reload is all or nothing: the file is read, validated and compiled on a thread of its own
//! ([`PolicySource::start_load`]), never on the control thread, so `/healthz`, `/metrics` and
//! signals are served while a large policy compiles. It is bounded in time
//! (`policy.load_timeout_ms`): a load that has not finished by then (a FIFO include with no
//! writer, a stalled network file system) is abandoned and counted as failed; its thread is left
//! to end on its own and its result is discarded. At most [`MAX_STALLED_LOADS`] such threads may
//! linger; past that, reloads are refused until one ends. Any error is logged (every one, with
//! file, line and column), counted in `bulkhead_policy_reload_failures_total`, and the running
//! policy stays. On success the new policy is swapped in atomically; workers notice the version
//! change within one idle tick and re-evaluate their established flows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use policy_engine::{compile, CompiledPolicy, LoadError, LoadedPolicy, PolicyStore};
use tokio::sync::oneshot;

use crate::metrics::{Metrics, PolicyOrigin};

/// Default bound on the time one policy load (read, validate, compile) may take.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Abandoned loads whose threads may still be running before further reloads are refused.
pub const MAX_STALLED_LOADS: usize = 4;

/// Where policies come from and which version comes next.
#[derive(Debug)]
pub struct PolicySource {
    file: Option<PathBuf>,
    next_version: u64,
    timeout: Duration,
    /// Load threads still running, abandoned ones included.
    running: Arc<AtomicUsize>,
    /// Set once a controller snapshot (pushed, or the last-known-good) is in force: from then
    /// on the controller owns the policy and the local file is not reloaded over it.
    managed: Arc<AtomicBool>,
}

/// What was loaded, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub version: u64,
    pub rules: usize,
    pub warnings: usize,
}

/// The result of one load.
pub type LoadResult = Result<(CompiledPolicy, Loaded), LoadFailure>;

/// Why a load produced no policy.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error("{0}")]
    Invalid(LoadError),
    #[error("the load did not finish within {} ms and was abandoned (is a file a FIFO, or \
             on a stalled file system?)", .0.as_millis())]
    TimedOut(Duration),
    #[error("{0} earlier loads are still stuck; refusing to start another")]
    TooManyStalled(usize),
    #[error("cannot start the load thread: {0}")]
    Thread(std::io::Error),
    #[error("the load thread panicked")]
    Panicked,
}

/// A load running on its own thread; [`PendingLoad::wait`] gives its result or a time-out.
#[derive(Debug)]
pub struct PendingLoad {
    rx: oneshot::Receiver<Result<(CompiledPolicy, Loaded), LoadError>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl PendingLoad {
    /// Waits for the load, at most until its deadline. Cancel-safe: it can sit in a `select!`.
    pub async fn wait(&mut self) -> LoadResult {
        match tokio::time::timeout_at(self.deadline, &mut self.rx).await {
            Ok(Ok(r)) => r.map_err(LoadFailure::Invalid),
            Ok(Err(_)) => Err(LoadFailure::Panicked),
            Err(_) => Err(LoadFailure::TimedOut(self.timeout)),
        }
    }
}

/// Decrements the running-load count when the thread ends, however it ends.
struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PolicySource {
    pub fn new(file: Option<PathBuf>) -> PolicySource {
        PolicySource {
            file,
            next_version: 1,
            timeout: DEFAULT_LOAD_TIMEOUT,
            running: Arc::new(AtomicUsize::new(0)),
            managed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag that says the controller owns the policy (shared with the controller client).
    pub fn managed(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.managed)
    }

    /// True once a controller snapshot is in force.
    pub fn is_managed(&self) -> bool {
        self.managed.load(Ordering::Acquire)
    }

    /// Sets the bound on one load's duration.
    pub fn with_timeout(mut self, timeout: Duration) -> PolicySource {
        self.timeout = timeout;
        self
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The policy to start with: the file's, or deny-all when none is configured. An invalid
    /// file is an error (the daemon does not start on a policy it cannot read). Synchronous and
    /// unbounded: for `run --check`; the daemon uses [`PolicySource::initial_bounded`].
    pub fn initial(&mut self) -> Result<(CompiledPolicy, Loaded), LoadError> {
        match self.file.clone() {
            None => Ok(deny_all()),
            Some(path) => {
                let version = self.take_version();
                load_and_compile(&path, version)
            }
        }
    }

    /// [`PolicySource::initial`] on a load thread, bounded by the load timeout.
    pub async fn initial_bounded(&mut self) -> LoadResult {
        if self.file.is_none() {
            return Ok(deny_all());
        }
        match self.start_load() {
            Ok(Some(mut pending)) => self.settle(pending.wait().await),
            Ok(None) => Ok(deny_all()),
            Err(e) => Err(e),
        }
    }

    fn take_version(&mut self) -> u64 {
        let v = self.next_version;
        self.next_version += 1;
        v
    }

    /// Starts loading the file on a thread of its own (None: no file is configured). The
    /// result must be handed to [`PolicySource::settle`], which keeps versions contiguous.
    pub fn start_load(&mut self) -> Result<Option<PendingLoad>, LoadFailure> {
        let Some(path) = self.file.clone() else {
            return Ok(None);
        };
        let stalled = self.running.load(Ordering::Acquire);
        if stalled >= MAX_STALLED_LOADS {
            return Err(LoadFailure::TooManyStalled(stalled));
        }
        let version = self.take_version();
        let (tx, rx) = oneshot::channel();
        self.running.fetch_add(1, Ordering::AcqRel);
        let guard = RunningGuard(self.running.clone());
        let spawned = std::thread::Builder::new()
            .name("bulkhead-policy".into())
            .spawn(move || {
                let _guard = guard;
                // The receiver is gone when the load was abandoned: the result is dropped here.
                let _ = tx.send(load_and_compile(&path, version));
            });
        if let Err(e) = spawned {
            self.next_version -= 1;
            return Err(LoadFailure::Thread(e));
        }
        Ok(Some(PendingLoad {
            rx,
            deadline: tokio::time::Instant::now() + self.timeout,
            timeout: self.timeout,
        }))
    }

    /// Takes a load's result: on failure, the version it reserved is given back (only one
    /// load is in flight at a time, so it is still the latest).
    pub fn settle(&mut self, result: LoadResult) -> LoadResult {
        if result.is_err() {
            self.next_version -= 1;
        }
        result
    }

    /// Applies the result of a reload to `store`. Returns the new version, or None when the
    /// reload was refused (errors logged and counted).
    pub fn finish_reload(
        &mut self,
        result: LoadResult,
        store: &PolicyStore,
        metrics: &Metrics,
    ) -> Option<u64> {
        let path = self.file.clone().unwrap_or_default();
        match self.settle(result) {
            Ok(_) if self.is_managed() => {
                // A controller snapshot arrived while the file was loading: it wins.
                tracing::warn!(
                    file = %path.display(),
                    "policy reload discarded: the controller's policy is in force"
                );
                None
            }
            Ok((compiled, loaded)) => {
                let previous = publish(store, metrics, compiled, PolicyOrigin::File);
                tracing::info!(
                    file = %path.display(),
                    version = loaded.version,
                    previous,
                    rules = loaded.rules,
                    warnings = loaded.warnings,
                    "policy reloaded"
                );
                Some(loaded.version)
            }
            Err(err) => {
                self.report_failure(&err, store, metrics);
                None
            }
        }
    }

    /// Logs and counts a reload that produced no policy (a failed load, or one that could not
    /// be started).
    pub fn report_failure(&self, err: &LoadFailure, store: &PolicyStore, metrics: &Metrics) {
        match err {
            LoadFailure::Invalid(e) => {
                for d in &e.errors {
                    tracing::error!("{d}");
                }
            }
            other => tracing::error!("{other}"),
        }
        tracing::error!(
            file = %self.file.as_deref().unwrap_or(Path::new("")).display(),
            running = store.version(),
            "policy reload refused; the running policy stays"
        );
        metrics.policy_reload_failed();
    }
}

/// Makes `compiled` the policy in force: one atomic swap in `store` (workers notice the new
/// generation within one idle tick, re-evaluate their established flows and cut those it
/// denies with reason `policy_update`), then the metrics. Every change after start-up goes
/// through here, a SIGHUP reload and a controller snapshot alike. Returns the previous version.
pub fn publish(
    store: &PolicyStore,
    metrics: &Metrics,
    compiled: CompiledPolicy,
    origin: PolicyOrigin,
) -> u64 {
    let version = compiled.version();
    let previous = store.store(compiled);
    metrics.policy_applied(version, true);
    metrics.set_policy_origin(origin);
    let previous_version = previous.version();
    // Freeing a large compiled policy takes time: not on the control thread.
    let _ = std::thread::Builder::new()
        .name("bulkhead-policy-free".into())
        .spawn(move || drop(previous));
    previous_version
}

fn deny_all() -> (CompiledPolicy, Loaded) {
    (
        CompiledPolicy::deny_all(0),
        Loaded {
            version: 0,
            rules: 0,
            warnings: 0,
        },
    )
}

/// Reads, validates and compiles one policy file as `version`.
fn load_and_compile(path: &Path, version: u64) -> Result<(CompiledPolicy, Loaded), LoadError> {
    let loaded = load_policy_file(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
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

/// Loads a policy file. The loader reads the file and each of its includes only if it is a
/// regular file, opened without blocking (a FIFO, a device or a directory is refused with an
/// error, see [`policy_engine::file`]), so no load can stall on one.
pub fn load_policy_file(path: &Path) -> Result<LoadedPolicy, LoadError> {
    policy_engine::load_policy_file(path)
}

/// A store holding `initial`, shared with the workers.
pub fn new_store(initial: CompiledPolicy) -> Arc<PolicyStore> {
    Arc::new(PolicyStore::new(initial))
}
