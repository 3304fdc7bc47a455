//! Signals and the orderly stop of the worker threads.
//!
//! SIGHUP reloads the policy; SIGTERM and SIGINT stop the gateway: the stop flag is set and the
//! shared [`WakeFd`] signalled, so every worker leaves its `poll` at once, ends its flows (their
//! flow-end records go to the log) and exits. A worker that stops on its own (its queue failed,
//! or it panicked) reports through [`ExitNotice`], which stops the whole gateway with an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::sys::tun::WakeFd;

/// What the control loop was woken for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Reload,
    Stop(&'static str),
    WorkerExited(usize),
}

/// The signals the daemon handles, registered before anything is set up so an early SIGTERM
/// still goes through the orderly path.
#[derive(Debug)]
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    exits: mpsc::Receiver<usize>,
}

/// Sent (once) when a worker thread ends, however it ends.
#[derive(Debug)]
pub struct ExitNotice {
    index: usize,
    tx: mpsc::Sender<usize>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.tx.try_send(self.index);
    }
}

impl Signals {
    /// Registers SIGHUP, SIGTERM and SIGINT; `workers` bounds the exit-notice channel.
    pub fn new(workers: usize) -> std::io::Result<(Signals, ExitNotices)> {
        let (tx, exits) = mpsc::channel(workers.max(1));
        Ok((
            Signals {
                hup: signal(SignalKind::hangup())?,
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                exits,
            },
            ExitNotices { tx },
        ))
    }

    /// Waits for the next event.
    pub async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.hup.recv() => Event::Reload,
            _ = self.term.recv() => Event::Stop("SIGTERM"),
            _ = self.int.recv() => Event::Stop("SIGINT"),
            Some(i) = self.exits.recv() => Event::WorkerExited(i),
        }
    }
}

/// Hands out one [`ExitNotice`] per worker.
#[derive(Debug, Clone)]
pub struct ExitNotices {
    tx: mpsc::Sender<usize>,
}

impl ExitNotices {
    pub fn notice(&self, index: usize) -> ExitNotice {
        ExitNotice {
            index,
            tx: self.tx.clone(),
        }
    }
}

/// The running workers and the means to stop them.
#[derive(Debug)]
pub struct Workers<T> {
    pub stop: Arc<AtomicBool>,
    pub wake: Arc<WakeFd>,
    pub handles: Vec<JoinHandle<T>>,
}

impl<T> Workers<T> {
    /// Tells every worker to stop and waits for them; returns their results (None: panicked).
    pub fn stop_and_join(self) -> Vec<Option<T>> {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.wake.signal() {
            // Without the wake-up the workers still see the flag within one idle tick.
            tracing::warn!(error = %e, "cannot wake the workers");
        }
        self.handles.into_iter().map(|h| h.join().ok()).collect()
    }
}
