//! Decision log sinks: a bounded queue between the workers and one writer thread.
//!
//! Workers call [`LogSender::submit`], which never blocks: when the queue is full the record is
//! dropped and counted ([`LogCounters::dropped`], exported as
//! `bulkhead_log_records_dropped_total`). The writer thread serializes each record once, as one
//! JSON line, to standard output or to a file with size-based rotation: when the next line would
//! take the file past `max_file_bytes`, `decisions.jsonl` becomes `decisions.jsonl.1`, `.1`
//! becomes `.2`, and so on; `keep_files` rotated files are kept, older ones are deleted. The
//! writer flushes whenever the queue runs empty, so a quiet gateway's records are on disk at once.
//! When every sender is gone the writer drains the queue, flushes and exits:
//! [`LogSink::finish`] waits for that.
//!
//! A [`Tee`] (the controller upload) sees every serialized line on the writer thread, never on
//! a worker; it must not block, and whatever it does with the line the log is written anyway.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File {
        path: PathBuf,
        max_file_bytes: u64,
        keep_files: u32,
    },
}

/// Receives each serialized record (without the newline) on the writer thread. Must not block.
pub type Tee = Box<dyn Fn(&str) + Send>;

/// Counters shared by the senders, the writer and the metrics endpoint.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Records written.
    pub written: AtomicU64,
    /// Records refused because the queue was full (or the writer had stopped).
    pub dropped: AtomicU64,
    /// Records lost to write errors (disk full, ...).
    pub write_errors: AtomicU64,
    /// Rotations done.
    pub rotations: AtomicU64,
}

/// The writer side: owns the thread.
#[derive(Debug)]
pub struct LogSink {
    handle: Option<JoinHandle<()>>,
    counters: Arc<LogCounters>,
}

/// The worker side: cheap to clone, never blocks.
#[derive(Debug)]
pub struct LogSender<T> {
    tx: SyncSender<T>,
    counters: Arc<LogCounters>,
}

impl<T> Clone for LogSender<T> {
    fn clone(&self) -> Self {
        LogSender {
            tx: self.tx.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T> LogSender<T> {
    /// Queues a record; false (and counted) when it had to be dropped.
    pub fn submit(&self, record: T) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl LogSink {
    /// Opens the destination (creating the file's directory) and starts the writer thread.
    pub fn start<T: Serialize + Send + 'static>(
        dest: Destination,
        capacity: usize,
    ) -> io::Result<(LogSink, LogSender<T>)> {
        Self::start_with_tee(dest, capacity, None)
    }

    /// [`LogSink::start`], with every serialized record also handed to `tee`.
    pub fn start_with_tee<T: Serialize + Send + 'static>(
        dest: Destination,
        capacity: usize,
        tee: Option<Tee>,
    ) -> io::Result<(LogSink, LogSender<T>)> {
        let out: Box<dyn LineWriter> = match &dest {
            Destination::Stdout => Box::new(StdoutWriter(BufWriter::new(io::stdout()))),
            Destination::File {
                path,
                max_file_bytes,
                keep_files,
            } => Box::new(RotatingFile::open(path, *max_file_bytes, *keep_files)?),
        };
        let counters = Arc::new(LogCounters::default());
        let (tx, rx) = mpsc::sync_channel::<T>(capacity.max(1));
        let c = counters.clone();
        let handle = std::thread::Builder::new()
            .name("bulkhead-log".into())
            .spawn(move || writer_loop(rx, out, tee, &c))?;
        Ok((
            LogSink {
                handle: Some(handle),
                counters: counters.clone(),
            },
            LogSender { tx, counters },
        ))
    }

    pub fn counters(&self) -> Arc<LogCounters> {
        self.counters.clone()
    }

    /// Waits until every sender is dropped and the writer has drained, flushed and exited.
    pub fn finish(mut self) {
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("decision log writer panicked");
            }
        }
    }
}

fn writer_loop<T: Serialize>(
    rx: Receiver<T>,
    mut out: Box<dyn LineWriter>,
    tee: Option<Tee>,
    c: &LogCounters,
) {
    let mut line = Vec::with_capacity(2048);
    let mut dirty = false;
    loop {
        let record = match rx.try_recv() {
            Ok(r) => r,
            Err(_) => {
                if dirty {
                    if let Err(e) = out.flush() {
                        tracing::warn!(error = %e, "flushing the decision log");
                    }
                    dirty = false;
                }
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        line.clear();
        if let Err(e) = serde_json::to_writer(&mut line, &record) {
            tracing::warn!(error = %e, "cannot serialize a decision record");
            c.write_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(tee) = &tee {
            // serde_json writes UTF-8 only.
            if let Ok(text) = std::str::from_utf8(&line) {
                tee(text);
            }
        }
        line.push(b'\n');
        match out.write_line(&line) {
            Ok(rotated) => {
                c.written.fetch_add(1, Ordering::Relaxed);
                if rotated {
                    c.rotations.fetch_add(1, Ordering::Relaxed);
                }
                dirty = true;
            }
            Err(e) => {
                // Reported once per burst would be nicer; a warning per record is bounded by the
                // queue rate and makes a full disk impossible to miss.
                tracing::warn!(error = %e, "writing the decision log");
                c.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Err(e) = out.flush() {
        tracing::warn!(error = %e, "flushing the decision log");
    }
}

trait LineWriter: Send {
    /// Writes one complete line; true when the file was rotated first.
    fn write_line(&mut self, line: &[u8]) -> io::Result<bool>;
    fn flush(&mut self) -> io::Result<()>;
}

struct StdoutWriter(BufWriter<io::Stdout>);

impl LineWriter for StdoutWriter {
    fn write_line(&mut self, line: &[u8]) -> io::Result<bool> {
        self.0.write_all(line).map(|()| false)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A JSON-lines file rotated by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_file_bytes: u64,
    keep_files: u32,
    file: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Opens (appending to) `path`, creating its directory.
    pub fn open(path: &Path, max_file_bytes: u64, keep_files: u32) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
            })?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_file_bytes,
            keep_files: keep_files.max(1),
            file: BufWriter::with_capacity(64 * 1024, file),
            size,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        match std::fs::remove_file(self.rotated(self.keep_files)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for n in (1..self.keep_files).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = BufWriter::with_capacity(64 * 1024, open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }

    /// Writes one line, rotating first when it would take the file past the limit.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<bool> {
        let mut rotated = false;
        if self.size > 0 && self.size + line.len() as u64 > self.max_file_bytes {
            self.rotate()?;
            rotated = true;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(rotated)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl LineWriter for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<bool> {
        RotatingFile::write_line(self, line)
    }
    fn flush(&mut self) -> io::Result<()> {
        RotatingFile::flush(self)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize)]
    struct Rec {
        n: u32,
        pad: String,
    }

    fn rec(n: u32) -> Rec {
        Rec {
            n,
            pad: "x".repeat(80),
        }
    }

    #[test]
    fn tee_sees_every_line_and_a_refusing_tee_loses_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tee_seen = Arc::clone(&seen);
        // Keeps only the first 10, as a full upload queue would.
        let tee: Tee = Box::new(move |line: &str| {
            let mut seen = tee_seen.lock().unwrap();
            if seen.len() < 10 {
                seen.push(line.to_owned());
            }
        });
        let dest = Destination::File {
            path: path.clone(),
            max_file_bytes: 1 << 20,
            keep_files: 1,
        };
        let (sink, tx) = LogSink::start_with_tee::<Rec>(dest, 1000, Some(tee)).unwrap();
        for n in 0..50 {
            assert!(tx.submit(rec(n)));
        }
        drop(tx);
        sink.finish();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(on_disk.lines().count(), 50);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 10);
        for (line, disk) in seen.iter().zip(on_disk.lines()) {
            assert_eq!(line, disk);
            assert!(!line.ends_with('\n'));
        }
    }

    #[test]
    fn rotation_keeps_n_files_and_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/decisions.jsonl");
        let (sink, tx) = LogSink::start::<Rec>(
            Destination::File {
                path: path.clone(),
                max_file_bytes: 4096,
                keep_files: 3,
            },
            10_000,
        )
        .unwrap();
        let counters = sink.counters();
        for n in 0..200 {
            assert!(tx.submit(rec(n)));
        }
        drop(tx);
        sink.finish();
        assert_eq!(counters.written.load(Ordering::Relaxed), 200);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
        assert!(counters.rotations.load(Ordering::Relaxed) >= 3);
        let mut all = Vec::new();
        for name in [
            "decisions.jsonl.3",
            "decisions.jsonl.2",
            "decisions.jsonl.1",
            "decisions.jsonl",
        ] {
            let p = dir.path().join("logs").join(name);
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() as u64 <= 4096, "{name} is {} bytes", text.len());
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                all.push(v["n"].as_u64().unwrap());
            }
        }
        assert!(!dir.path().join("logs/decisions.jsonl.4").exists());
        // The newest records, in order, without gaps, ending with the last one.
        assert_eq!(*all.last().unwrap(), 199);
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
        assert!(all.len() > 100);
    }

    #[test]
    fn reopening_appends_and_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, vec![b'a'; 4000]).unwrap();
        let mut f = RotatingFile::open(&path, 4096, 2).unwrap();
        assert!(f.write_line(&[b'b'; 100]).unwrap());
        f.flush().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("d.jsonl.1"))
                .unwrap()
                .len(),
            4000
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100);
        // A single line larger than the limit still goes out, alone in its file.
        assert!(f.write_line(&[b'c'; 5000]).unwrap());
        f.flush().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 5000);
    }

    #[test]
    fn full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        // Build the sender side without a writer draining it: a channel nobody reads.
        let counters = Arc::new(LogCounters::default());
        let (tx, _rx) = mpsc::sync_channel::<Rec>(4);
        let sender = LogSender {
            tx,
            counters: counters.clone(),
        };
        let accepted = (0..10).filter(|n| sender.submit(rec(*n))).count();
        assert_eq!(accepted, 4);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 6);
        drop(_rx);
        assert!(!sender.submit(rec(99)));
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 7);
        assert!(!path.exists());
    }

    #[test]
    fn unwritable_destination_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let err = LogSink::start::<Rec>(
            Destination::File {
                path: blocker.join("d.jsonl"),
                max_file_bytes: 4096,
                keep_files: 1,
            },
            8,
        )
        .unwrap_err();
        assert!(err.to_string().contains("creating"), "{err}");
    }
}
