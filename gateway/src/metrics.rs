//! Prometheus metrics, `/healthz` and `/readyz`.
//!
//! Every metric is declared in [`Metrics::new`] and rendered by [`Metrics::render`]; label values
//! come only from fixed vocabularies (actions, dispositions, reason codes, results), never from
//! packets: no IP address, name or rule name ever becomes a label, so the series count is bounded.
//!
//! Each worker owns a [`WorkerCounters`] block that only it writes (it counts in plain integers,
//! [`LocalCounters`], and publishes them with relaxed stores once per batch of packets); the
//! endpoint sums the blocks when scraped. Process-wide values (policy version, reloads, the
//! decision log's counters, readiness) are atomics in [`Metrics`].
//!
//! The HTTP side is a small HTTP/1.1 responder on tokio: `GET` or `HEAD` only, the request head
//! limited to 8 KiB and 5 s, at most 64 connections at once, `Connection: close` after every
//! answer.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::logsink::LogCounters;

/// Reported decision actions (`action` label).
pub const ACTIONS: [&str; 2] = ["allowed", "denied"];
/// Dispositions (`disposition` label).
pub const DISPOSITIONS: [&str; 3] = ["allowed", "blocked", "detected"];
/// Label value for anything outside a vocabulary.
pub const OTHER: &str = "other";

/// The label vocabularies a gateway build uses; each always ends with `other`.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    decision_reasons: Vec<&'static str>,
    drop_reasons: Vec<&'static str>,
}

impl Vocabulary {
    /// Decision record reasons (`rule`, `default`, `no_sni`, ...) and the reasons the pipeline
    /// drops a packet for. Duplicates are removed and `other` is added.
    pub fn new(decision_reasons: Vec<&'static str>, drop_reasons: Vec<&'static str>) -> Vocabulary {
        let clean = |list: Vec<&'static str>| {
            let mut out: Vec<&'static str> = Vec::with_capacity(list.len() + 1);
            for r in list {
                if !out.contains(&r) && r != OTHER {
                    out.push(r);
                }
            }
            out.push(OTHER);
            out
        };
        Vocabulary {
            decision_reasons: clean(decision_reasons),
            drop_reasons: clean(drop_reasons),
        }
    }

    pub fn decision_reasons(&self) -> &[&'static str] {
        &self.decision_reasons
    }

    pub fn drop_reasons(&self) -> &[&'static str] {
        &self.drop_reasons
    }

    /// Index of a decision reason (`other` when unknown).
    pub fn decision_reason(&self, r: &str) -> usize {
        index_or_other(&self.decision_reasons, r)
    }

    /// Index of a drop reason (`other` when unknown).
    pub fn drop_reason(&self, r: &str) -> usize {
        index_or_other(&self.drop_reasons, r)
    }
}

fn index_or_other(list: &[&str], r: &str) -> usize {
    list.iter()
        .position(|x| *x == r)
        .or_else(|| list.iter().position(|x| *x == OTHER))
        .expect("vocabularies always hold `other`")
}

/// Counters of one worker; written by that worker only.
#[derive(Debug)]
pub struct WorkerCounters {
    values: Box<[AtomicU64]>,
    layout: Layout,
}

/// The worker's private tally, published with [`LocalCounters::publish`].
#[derive(Debug, Clone)]
pub struct LocalCounters {
    values: Box<[u64]>,
    layout: Layout,
}

/// What a worker's flow table looks like now (gauges) and what it did so far (counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTableState {
    pub active: u64,
    pub held_bytes: u64,
    pub flow_limit_refusals: u64,
    /// Half-open flows evicted to make room (early drop).
    pub evictions: u64,
    pub capacity: u64,
}

/// Where each counter sits in the flat arrays.
#[derive(Debug, Clone, Copy)]
struct Layout {
    drop_reasons: usize,
    decision_reasons: usize,
}

// Fixed slots.
const FWD_PACKETS: usize = 0;
const FWD_BYTES: usize = 1;
const TX_PACKETS: usize = 2;
const TX_BYTES: usize = 3;
const HELD_PACKETS: usize = 4;
const TUN_READ_ERRORS: usize = 5;
const TUN_WRITE_ERRORS: usize = 6;
const ACTIVE_FLOWS: usize = 7;
const HELD_BYTES: usize = 8;
const FLOW_LIMIT_REFUSALS: usize = 9;
const FLOW_CAPACITY: usize = 10;
const FLOW_EVICTIONS: usize = 11;
const FIXED: usize = 12;

impl Layout {
    fn dropped_packets(&self, reason: usize) -> usize {
        FIXED + reason
    }
    fn dropped_bytes(&self, reason: usize) -> usize {
        FIXED + self.drop_reasons + reason
    }
    fn decision(&self, action: usize, disposition: usize, reason: usize) -> usize {
        FIXED
            + 2 * self.drop_reasons
            + (action * DISPOSITIONS.len() + disposition) * self.decision_reasons
            + reason
    }
    fn len(&self) -> usize {
        FIXED + 2 * self.drop_reasons + ACTIONS.len() * DISPOSITIONS.len() * self.decision_reasons
    }
}

impl LocalCounters {
    pub fn forwarded(&mut self, bytes: usize) {
        self.values[FWD_PACKETS] += 1;
        self.values[FWD_BYTES] += bytes as u64;
    }
    /// A packet the gateway wrote besides the one it was handed (released, RST, ICMP).
    pub fn transmitted(&mut self, bytes: usize) {
        self.values[TX_PACKETS] += 1;
        self.values[TX_BYTES] += bytes as u64;
    }
    pub fn held(&mut self) {
        self.values[HELD_PACKETS] += 1;
    }
    /// `reason` is an index from [`Vocabulary::drop_reason`].
    pub fn dropped(&mut self, reason: usize, bytes: usize) {
        let r = reason.min(self.layout.drop_reasons - 1);
        self.values[self.layout.dropped_packets(r)] += 1;
        self.values[self.layout.dropped_bytes(r)] += bytes as u64;
    }
    /// `action`: 0 allowed, 1 denied; `disposition`: index into [`DISPOSITIONS`]; `reason`: from
    /// [`Vocabulary::decision_reason`].
    pub fn decision(&mut self, action: usize, disposition: usize, reason: usize) {
        let i = self.layout.decision(
            action.min(ACTIONS.len() - 1),
            disposition.min(DISPOSITIONS.len() - 1),
            reason.min(self.layout.decision_reasons - 1),
        );
        self.values[i] += 1;
    }
    pub fn tun_read_error(&mut self) {
        self.values[TUN_READ_ERRORS] += 1;
    }
    pub fn tun_write_error(&mut self) {
        self.values[TUN_WRITE_ERRORS] += 1;
    }
    /// Gauges and counters the pipeline keeps itself.
    pub fn set_flow_state(&mut self, state: FlowTableState) {
        self.values[ACTIVE_FLOWS] = state.active;
        self.values[HELD_BYTES] = state.held_bytes;
        self.values[FLOW_LIMIT_REFUSALS] = state.flow_limit_refusals;
        self.values[FLOW_EVICTIONS] = state.evictions;
        self.values[FLOW_CAPACITY] = state.capacity;
    }

    /// Copies the tally to the shared block (the owner is the only writer).
    pub fn publish(&self, to: &WorkerCounters) {
        for (a, v) in to.values.iter().zip(self.values.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
    }
}

impl WorkerCounters {
    fn get(&self, i: usize) -> u64 {
        self.values[i].load(Ordering::Relaxed)
    }

    /// A fresh local tally for the worker that owns this block.
    pub fn local(&self) -> LocalCounters {
        LocalCounters {
            values: self
                .values
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .collect(),
            layout: self.layout,
        }
    }
}

/// Everything `/metrics` reports and `/readyz` decides on.
#[derive(Debug)]
pub struct Metrics {
    vocab: Vocabulary,
    workers: Vec<Arc<WorkerCounters>>,
    log: Arc<LogCounters>,
    policy_version: AtomicU64,
    policy_applied_ms: AtomicU64,
    policy_reloads: AtomicU64,
    policy_reload_failures: AtomicU64,
    tun_up: AtomicBool,
    policy_loaded: AtomicBool,
    started_ms: u64,
}

impl Metrics {
    /// Registers every metric: one counter block per worker, label vocabularies fixed here.
    pub fn new(vocab: Vocabulary, workers: usize, log: Arc<LogCounters>) -> Metrics {
        let layout = Layout {
            drop_reasons: vocab.drop_reasons.len(),
            decision_reasons: vocab.decision_reasons.len(),
        };
        let workers = (0..workers)
            .map(|_| {
                Arc::new(WorkerCounters {
                    values: (0..layout.len()).map(|_| AtomicU64::new(0)).collect(),
                    layout,
                })
            })
            .collect();
        Metrics {
            vocab,
            workers,
            log,
            policy_version: AtomicU64::new(0),
            policy_applied_ms: AtomicU64::new(0),
            policy_reloads: AtomicU64::new(0),
            policy_reload_failures: AtomicU64::new(0),
            tun_up: AtomicBool::new(false),
            policy_loaded: AtomicBool::new(false),
            started_ms: now_ms(),
        }
    }

    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// The counter block of worker `i`.
    pub fn worker(&self, i: usize) -> Arc<WorkerCounters> {
        self.workers[i].clone()
    }

    /// A policy was applied (at start or by a reload).
    pub fn policy_applied(&self, version: u64, reload: bool) {
        self.policy_version.store(version, Ordering::Relaxed);
        self.policy_applied_ms.store(now_ms(), Ordering::Relaxed);
        self.policy_loaded.store(true, Ordering::Release);
        if reload {
            self.policy_reloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A reload was refused (the old policy stays).
    pub fn policy_reload_failed(&self) {
        self.policy_reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_tun_up(&self, up: bool) {
        self.tun_up.store(up, Ordering::Release);
    }

    /// Ready: the TUN is up and a policy is loaded.
    pub fn ready(&self) -> bool {
        self.tun_up.load(Ordering::Acquire) && self.policy_loaded.load(Ordering::Acquire)
    }

    fn sum(&self, i: usize) -> u64 {
        self.workers
            .iter()
            .map(|w| w.get(i))
            .fold(0u64, u64::wrapping_add)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let layout = Layout {
            drop_reasons: self.vocab.drop_reasons.len(),
            decision_reasons: self.vocab.decision_reasons.len(),
        };
        header(
            &mut out,
            "bulkhead_build_info",
            "gauge",
            "Build information; always 1.",
        );
        let _ = writeln!(
            out,
            "bulkhead_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut out,
            "bulkhead_start_time_seconds",
            "gauge",
            "Start time, Unix seconds.",
        );
        let _ = writeln!(out, "bulkhead_start_time_seconds {}", secs(self.started_ms));
        header(
            &mut out,
            "bulkhead_ready",
            "gauge",
            "1 when the TUN is up and a policy is loaded.",
        );
        let _ = writeln!(out, "bulkhead_ready {}", u8::from(self.ready()));
        header(
            &mut out,
            "bulkhead_workers",
            "gauge",
            "Worker threads (one per TUN queue).",
        );
        let _ = writeln!(out, "bulkhead_workers {}", self.workers.len());

        header(
            &mut out,
            "bulkhead_decisions_total",
            "counter",
            "Decision records, by reported action, disposition and reason.",
        );
        for (a, action) in ACTIONS.iter().enumerate() {
            for (d, disposition) in DISPOSITIONS.iter().enumerate() {
                for (r, reason) in self.vocab.decision_reasons.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "bulkhead_decisions_total{{action=\"{action}\",disposition=\"{disposition}\",reason=\"{reason}\"}} {}",
                        self.sum(layout.decision(a, d, r))
                    );
                }
            }
        }
        simple(
            &mut out,
            "bulkhead_packets_forwarded_total",
            "counter",
            "Packets forwarded as they arrived.",
            self.sum(FWD_PACKETS),
        );
        simple(
            &mut out,
            "bulkhead_bytes_forwarded_total",
            "counter",
            "IP bytes forwarded as they arrived.",
            self.sum(FWD_BYTES),
        );
        simple(
            &mut out,
            "bulkhead_packets_transmitted_total",
            "counter",
            "Packets written besides the one read: held packets released, RSTs, ICMP errors.",
            self.sum(TX_PACKETS),
        );
        simple(
            &mut out,
            "bulkhead_bytes_transmitted_total",
            "counter",
            "IP bytes of the packets counted by bulkhead_packets_transmitted_total.",
            self.sum(TX_BYTES),
        );
        simple(
            &mut out,
            "bulkhead_packets_held_total",
            "counter",
            "Packets held while their flow's name was inspected.",
            self.sum(HELD_PACKETS),
        );
        header(
            &mut out,
            "bulkhead_packets_dropped_total",
            "counter",
            "Packets dropped, by reason.",
        );
        for (r, reason) in self.vocab.drop_reasons.iter().enumerate() {
            let _ = writeln!(
                out,
                "bulkhead_packets_dropped_total{{reason=\"{reason}\"}} {}",
                self.sum(layout.dropped_packets(r))
            );
        }
        header(
            &mut out,
            "bulkhead_bytes_dropped_total",
            "counter",
            "IP bytes dropped, by reason.",
        );
        for (r, reason) in self.vocab.drop_reasons.iter().enumerate() {
            let _ = writeln!(
                out,
                "bulkhead_bytes_dropped_total{{reason=\"{reason}\"}} {}",
                self.sum(layout.dropped_bytes(r))
            );
        }
        simple(
            &mut out,
            "bulkhead_flows_active",
            "gauge",
            "Flows in the flow tables.",
            self.sum(ACTIVE_FLOWS),
        );
        simple(
            &mut out,
            "bulkhead_flow_table_capacity",
            "gauge",
            "Flows the flow tables can hold (all workers).",
            self.sum(FLOW_CAPACITY),
        );
        simple(
            &mut out,
            "bulkhead_flow_limit_refusals_total",
            "counter",
            "New flows refused because a flow table was full.",
            self.sum(FLOW_LIMIT_REFUSALS),
        );
        simple(
            &mut out,
            "bulkhead_flow_evictions_total",
            "counter",
            "Half-open TCP flows (SYN never answered) evicted to make room in a full flow table.",
            self.sum(FLOW_EVICTIONS),
        );
        simple(
            &mut out,
            "bulkhead_held_bytes",
            "gauge",
            "Bytes held while flows await their name.",
            self.sum(HELD_BYTES),
        );
        simple(
            &mut out,
            "bulkhead_tun_read_errors_total",
            "counter",
            "Failed TUN reads.",
            self.sum(TUN_READ_ERRORS),
        );
        simple(
            &mut out,
            "bulkhead_tun_write_errors_total",
            "counter",
            "Failed TUN writes (the packet is lost).",
            self.sum(TUN_WRITE_ERRORS),
        );
        simple(
            &mut out,
            "bulkhead_policy_version",
            "gauge",
            "Version of the policy enforced.",
            self.policy_version.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "bulkhead_policy_last_applied_timestamp_seconds",
            "gauge",
            "When the enforced policy was applied, Unix seconds.",
        );
        let _ = writeln!(
            out,
            "bulkhead_policy_last_applied_timestamp_seconds {}",
            secs(self.policy_applied_ms.load(Ordering::Relaxed))
        );
        simple(
            &mut out,
            "bulkhead_policy_reloads_total",
            "counter",
            "Policy reloads applied.",
            self.policy_reloads.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "bulkhead_policy_reload_failures_total",
            "counter",
            "Policy reloads refused (invalid file); the previous policy stayed.",
            self.policy_reload_failures.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "bulkhead_log_records_written_total",
            "counter",
            "Decision records written.",
            self.log.written.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "bulkhead_log_records_dropped_total",
            "counter",
            "Decision records dropped because the log queue was full.",
            self.log.dropped.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "bulkhead_log_write_errors_total",
            "counter",
            "Decision records lost to write errors.",
            self.log.write_errors.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "bulkhead_log_rotations_total",
            "counter",
            "Decision log file rotations.",
            self.log.rotations.load(Ordering::Relaxed),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn simple(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Too many at once: close this one rather than queue without bound.
            drop(stream);
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &m)).await;
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request header too large\n",
                false,
            )
            .await;
        }
    }
    let (status, ctype, body, head) = route(&buf, metrics);
    respond(&mut stream, status, ctype, &body, head).await
}

/// Maps a request head to (status, content type, body, is HEAD).
fn route(head: &[u8], metrics: &Metrics) -> (u16, &'static str, String, bool) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let is_head = method == "HEAD";
    if method != "GET" && !is_head {
        return (405, TEXT, "only GET and HEAD\n".into(), false);
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
            is_head,
        ),
        "/healthz" => (200, TEXT, "ok\n".into(), is_head),
        "/readyz" if metrics.ready() => (200, TEXT, "ready\n".into(), is_head),
        "/readyz" => (503, TEXT, "not ready\n".into(), is_head),
        _ => (404, TEXT, "not found\n".into(), is_head),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        msg.push_str(body);
    }
    stream.write_all(msg.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(workers: usize) -> Metrics {
        Metrics::new(
            Vocabulary::new(
                vec!["rule", "default", "policy_update"],
                vec!["policy", "malformed"],
            ),
            workers,
            Arc::new(LogCounters::default()),
        )
    }

    fn value(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn worker_counters_are_summed_with_bounded_labels() {
        let m = metrics(2);
        let v = m.vocabulary().clone();
        let mut a = m.worker(0).local();
        let mut b = m.worker(1).local();
        a.forwarded(1500);
        b.forwarded(100);
        a.dropped(v.drop_reason("malformed"), 40);
        b.dropped(v.drop_reason("something-new"), 60);
        a.decision(1, 1, v.decision_reason("policy_update"));
        b.decision(0, 2, v.decision_reason("rule"));
        b.decision(0, 2, v.decision_reason("rule"));
        a.set_flow_state(FlowTableState {
            active: 3,
            held_bytes: 700,
            flow_limit_refusals: 1,
            evictions: 5,
            capacity: 100,
        });
        b.set_flow_state(FlowTableState {
            active: 4,
            held_bytes: 0,
            flow_limit_refusals: 2,
            evictions: 6,
            capacity: 100,
        });
        a.publish(&m.worker(0));
        b.publish(&m.worker(1));
        let t = m.render();
        assert_eq!(value(&t, "bulkhead_packets_forwarded_total"), 2);
        assert_eq!(value(&t, "bulkhead_bytes_forwarded_total"), 1600);
        assert_eq!(
            value(&t, "bulkhead_packets_dropped_total{reason=\"malformed\"}"),
            1
        );
        assert_eq!(
            value(&t, "bulkhead_bytes_dropped_total{reason=\"other\"}"),
            60
        );
        assert_eq!(
            value(&t, "bulkhead_packets_dropped_total{reason=\"policy\"}"),
            0
        );
        assert_eq!(
            value(
                &t,
                "bulkhead_decisions_total{action=\"denied\",disposition=\"blocked\",reason=\"policy_update\"}"
            ),
            1
        );
        assert_eq!(
            value(
                &t,
                "bulkhead_decisions_total{action=\"allowed\",disposition=\"detected\",reason=\"rule\"}"
            ),
            2
        );
        assert_eq!(value(&t, "bulkhead_flows_active"), 7);
        assert_eq!(value(&t, "bulkhead_flow_table_capacity"), 200);
        assert_eq!(value(&t, "bulkhead_flow_limit_refusals_total"), 3);
        assert_eq!(value(&t, "bulkhead_flow_evictions_total"), 11);
        assert_eq!(value(&t, "bulkhead_held_bytes"), 700);
        // 2 actions x 3 dispositions x 4 reasons (with `other`), no more.
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("bulkhead_decisions_total{"))
                .count(),
            24
        );
    }

    #[test]
    fn exposition_is_well_formed() {
        let m = metrics(1);
        let t = m.render();
        let mut declared = std::collections::BTreeSet::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap();
                assert!(matches!(it.next(), Some("counter" | "gauge")), "{line}");
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                if it.next().is_none() && name.ends_with("_total") {
                    assert!(rest.ends_with("counter"), "{line}");
                }
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{name} has no # TYPE");
                let v = line.rsplit(' ').next().unwrap();
                assert!(v.parse::<f64>().is_ok(), "{line}");
            }
        }
        for needed in [
            "bulkhead_build_info",
            "bulkhead_policy_version",
            "bulkhead_policy_last_applied_timestamp_seconds",
            "bulkhead_policy_reload_failures_total",
            "bulkhead_log_records_dropped_total",
            "bulkhead_flows_active",
        ] {
            assert!(declared.contains(needed), "{needed}");
        }
    }

    #[test]
    fn readiness_needs_tun_and_policy() {
        let m = metrics(1);
        assert!(!m.ready());
        m.set_tun_up(true);
        assert!(!m.ready());
        m.policy_applied(7, false);
        assert!(m.ready());
        m.policy_reload_failed();
        let t = m.render();
        assert_eq!(value(&t, "bulkhead_policy_version"), 7);
        assert_eq!(value(&t, "bulkhead_policy_reload_failures_total"), 1);
        assert_eq!(value(&t, "bulkhead_policy_reloads_total"), 0);
        assert_eq!(value(&t, "bulkhead_ready"), 1);
    }

    #[test]
    fn routes_requests() {
        let m = metrics(1);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n", &m).0, 200);
        assert_eq!(route(b"GET /healthz HTTP/1.1\r\n\r\n", &m).0, 200);
        assert_eq!(route(b"GET /readyz HTTP/1.1\r\n\r\n", &m).0, 503);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n", &m).0, 405);
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n", &m).0, 404);
        assert_eq!(route(b"\xff\xfe garbage", &m).0, 405);
        let (s, _, body, head) = route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n", &m);
        assert!(s == 200 && head && body.contains("bulkhead_build_info"));
    }

    #[tokio::test]
    async fn serves_over_tcp_and_bounds_the_request() {
        let m = Arc::new(metrics(1));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, m.clone(), async {
            let _ = stop_rx.await;
        }));
        let get = |req: Vec<u8>| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&req).await.unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).await.unwrap();
            resp
        };
        let r = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("bulkhead_workers 1"), "{r}");
        let r = get(b"GET /readyz HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 8_300 - big.len()));
        let r = get(big).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        stop_tx.send(()).unwrap();
        server.await.unwrap();
    }
}
