//! Prometheus metrics, `/healthz` and `/readyz`.
//!
//! Every metric is declared in [`Metrics::new`] and rendered by [`Metrics::render`]; label values
//! come only from fixed vocabularies, typed labels ([`labels::Label`]: actions, dispositions,
//! reason codes), never from packets: no IP address, name or rule name ever becomes a label, so
//! the series count is bounded.
//!
//! Each worker owns a [`WorkerCounters`] block that only it writes (it counts in plain integers,
//! [`LocalCounters`], and publishes them with relaxed stores once per batch of packets); the
//! endpoint sums the blocks when scraped. Process-wide values (policy version, reloads, the
//! decision log's counters, readiness) are atomics in [`Metrics`].
//!
//! Submodules: [`labels`] (label vocabularies), [`counters`] (the per-worker slots), `render`
//! (the text exposition), [`http`] (the endpoint, re-exported as [`serve`]).

mod control;
pub mod counters;
mod dns;
mod fastpath;
pub mod http;
pub mod labels;
mod render;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::control::ControlStats;
use crate::fastpath::FastPathStats;
use crate::logsink::LogCounters;

pub use self::counters::{FlowTableState, LocalCounters, WorkerCounters};
pub use self::dns::DnsProcessStats;
pub use self::http::serve;
pub use self::labels::{
    DnsEvent, DnsQueryOutcome, Label, PolicyOrigin, ACTIONS, DISPOSITIONS, OTHER,
};

/// Everything `/metrics` reports and `/readyz` decides on.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<Arc<WorkerCounters>>,
    log: Arc<LogCounters>,
    policy_version: AtomicU64,
    policy_applied_ms: AtomicU64,
    policy_reloads: AtomicU64,
    policy_reload_failures: AtomicU64,
    /// [`PolicyOrigin`] index of the enforced policy.
    policy_origin: AtomicUsize,
    /// The controller client's counters, when `[controller]` is configured (set once at
    /// start-up, before the endpoint serves, so the series set does not change while running).
    control: OnceLock<Arc<ControlStats>>,
    dns: OnceLock<DnsProcessStats>,
    /// The kernel fast path's counters (set once at start-up, like `control`).
    fastpath: OnceLock<Arc<FastPathStats>>,
    tun_up: AtomicBool,
    policy_loaded: AtomicBool,
    started_ms: u64,
}

impl Metrics {
    /// Registers every metric: one counter block per worker; the label vocabularies are the
    /// typed labels of [`labels`], fixed at build time.
    pub fn new(workers: usize, log: Arc<LogCounters>) -> Metrics {
        let workers = (0..workers)
            .map(|_| Arc::new(WorkerCounters::new()))
            .collect();
        Metrics {
            workers,
            log,
            policy_version: AtomicU64::new(0),
            policy_applied_ms: AtomicU64::new(0),
            policy_reloads: AtomicU64::new(0),
            policy_reload_failures: AtomicU64::new(0),
            policy_origin: AtomicUsize::new(PolicyOrigin::DenyAll.index()),
            control: OnceLock::new(),
            dns: OnceLock::new(),
            fastpath: OnceLock::new(),
            tun_up: AtomicBool::new(false),
            policy_loaded: AtomicBool::new(false),
            started_ms: now_ms(),
        }
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

    /// Where the enforced policy came from.
    pub fn set_policy_origin(&self, origin: PolicyOrigin) {
        self.policy_origin.store(origin.index(), Ordering::Relaxed);
    }

    /// Exports the controller client's counters.
    pub fn set_control_stats(&self, stats: Arc<ControlStats>) {
        let _ = self.control.set(stats);
    }

    /// Exports the kernel fast path's counters.
    pub fn set_fastpath_stats(&self, stats: Arc<FastPathStats>) {
        let _ = self.fastpath.set(stats);
    }

    /// The DNS check's resolver and cache: their series are rendered from then on.
    pub fn set_dns_stats(&self, stats: DnsProcessStats) {
        let _ = self.dns.set(stats);
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

    /// Version of the enforced policy.
    pub fn policy_version(&self) -> u64 {
        self.policy_version.load(Ordering::Relaxed)
    }

    /// Where the enforced policy came from, as its label value.
    pub fn policy_origin_label(&self) -> &'static str {
        let i = self.policy_origin.load(Ordering::Relaxed);
        <PolicyOrigin as Label>::VALUES
            .get(i)
            .copied()
            .unwrap_or(OTHER)
    }

    /// Each worker's heartbeat: a count that moves every time the worker goes round its loop
    /// (see [`WorkerCounters::heartbeat`]); the systemd watchdog is fed only while all move.
    pub fn worker_heartbeats(&self) -> impl Iterator<Item = u64> + '_ {
        self.workers.iter().map(|w| w.heartbeat())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::DropReason;
    use crate::record::{Disposition, Reason, RecordAction};

    fn metrics(workers: usize) -> Metrics {
        Metrics::new(workers, Arc::new(LogCounters::default()))
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
        let mut a = m.worker(0).local();
        let mut b = m.worker(1).local();
        a.forwarded(1500);
        b.forwarded(100);
        a.dropped(DropReason::Malformed, 40);
        b.dropped(DropReason::FailClosed(Reason::Unknown), 60);
        a.decision(
            RecordAction::Denied,
            Disposition::Blocked,
            Reason::PolicyUpdate,
        );
        b.decision(RecordAction::Allowed, Disposition::Detected, Reason::Rule);
        b.decision(RecordAction::Allowed, Disposition::Detected, Reason::Rule);
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
        // 2 actions x 3 dispositions x (every known reason and `other`), no more.
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("bulkhead_decisions_total{"))
                .count(),
            2 * 3 * (Reason::KNOWN.len() + 1)
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
}
