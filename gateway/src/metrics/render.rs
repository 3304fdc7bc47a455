//! The Prometheus text exposition (format 0.0.4), one function per metric family.
//!
//! Names, help texts, label names and label values are a contract with dashboards and alerts;
//! `testdata/exposition.prom` pins the whole output for a known state.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::counters::{self, *};
use super::labels::Label;
use super::Metrics;
use crate::pipeline::DropReason;
use crate::record::{Disposition, Reason, RecordAction};

/// A series summed over the workers: name, type, help, slot.
type WorkerSeries = (&'static str, &'static str, &'static str, usize);

/// A drop family: name, help, slot of a drop label index.
type DropFamily = (&'static str, &'static str, fn(usize) -> usize);

/// Traffic counters, rendered before the drop families.
const TRAFFIC: [WorkerSeries; 5] = [
    (
        "bulkhead_packets_forwarded_total",
        "counter",
        "Packets forwarded as they arrived.",
        FWD_PACKETS,
    ),
    (
        "bulkhead_bytes_forwarded_total",
        "counter",
        "IP bytes forwarded as they arrived.",
        FWD_BYTES,
    ),
    (
        "bulkhead_packets_transmitted_total",
        "counter",
        "Packets written besides the one read: held packets released, RSTs, ICMP errors.",
        TX_PACKETS,
    ),
    (
        "bulkhead_bytes_transmitted_total",
        "counter",
        "IP bytes of the packets counted by bulkhead_packets_transmitted_total.",
        TX_BYTES,
    ),
    (
        "bulkhead_packets_held_total",
        "counter",
        "Packets held while their flow's name was inspected.",
        HELD_PACKETS,
    ),
];

/// Flow-table and TUN series, rendered after the drop families.
const FLOWS_AND_TUN: [WorkerSeries; 7] = [
    (
        "bulkhead_flows_active",
        "gauge",
        "Flows in the flow tables.",
        ACTIVE_FLOWS,
    ),
    (
        "bulkhead_flow_table_capacity",
        "gauge",
        "Flows the flow tables can hold (all workers).",
        FLOW_CAPACITY,
    ),
    (
        "bulkhead_flow_limit_refusals_total",
        "counter",
        "New flows refused because a flow table was full.",
        FLOW_LIMIT_REFUSALS,
    ),
    (
        "bulkhead_flow_evictions_total",
        "counter",
        "Half-open TCP flows (SYN never answered) evicted to make room in a full flow table.",
        FLOW_EVICTIONS,
    ),
    (
        "bulkhead_held_bytes",
        "gauge",
        "Bytes held while flows await their name.",
        HELD_BYTES,
    ),
    (
        "bulkhead_tun_read_errors_total",
        "counter",
        "Failed TUN reads.",
        TUN_READ_ERRORS,
    ),
    (
        "bulkhead_tun_write_errors_total",
        "counter",
        "Failed TUN writes (the packet is lost).",
        TUN_WRITE_ERRORS,
    ),
];

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.render_process(&mut out);
        self.render_decisions(&mut out);
        self.render_worker_series(&mut out, &TRAFFIC);
        self.render_drops(&mut out);
        self.render_worker_series(&mut out, &FLOWS_AND_TUN);
        self.render_policy(&mut out);
        self.render_policy_source(&mut out);
        self.render_controller(&mut out);
        self.render_dns(&mut out);
        self.render_fastpath(&mut out);
        self.render_decision_log(&mut out);
        out
    }

    /// Build, start time, readiness, worker count.
    fn render_process(&self, out: &mut String) {
        header(
            out,
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
            out,
            "bulkhead_start_time_seconds",
            "gauge",
            "Start time, Unix seconds.",
        );
        let _ = writeln!(out, "bulkhead_start_time_seconds {}", secs(self.started_ms));
        header(
            out,
            "bulkhead_ready",
            "gauge",
            "1 when the TUN is up and a policy is loaded.",
        );
        let _ = writeln!(out, "bulkhead_ready {}", u8::from(self.ready()));
        header(
            out,
            "bulkhead_workers",
            "gauge",
            "Worker threads (one per TUN queue).",
        );
        let _ = writeln!(out, "bulkhead_workers {}", self.workers.len());
    }

    /// `bulkhead_decisions_total`: every action x disposition x reason, zeros included, so the
    /// series set never changes while the gateway runs.
    fn render_decisions(&self, out: &mut String) {
        header(
            out,
            "bulkhead_decisions_total",
            "counter",
            "Decision records, by reported action, disposition and reason.",
        );
        for (a, action) in RecordAction::VALUES.iter().enumerate() {
            for (d, disposition) in Disposition::VALUES.iter().enumerate() {
                for (r, reason) in Reason::VALUES.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "bulkhead_decisions_total{{action=\"{action}\",disposition=\"{disposition}\",reason=\"{reason}\"}} {}",
                        self.sum(counters::decision(a, d, r))
                    );
                }
            }
        }
    }

    /// Unlabelled series summed over the workers.
    fn render_worker_series(&self, out: &mut String, series: &[WorkerSeries]) {
        for &(name, kind, help, slot) in series {
            simple(out, name, kind, help, self.sum(slot));
        }
    }

    /// Dropped packets and bytes, by reason.
    fn render_drops(&self, out: &mut String) {
        let families: [DropFamily; 2] = [
            (
                "bulkhead_packets_dropped_total",
                "Packets dropped, by reason.",
                dropped_packets,
            ),
            (
                "bulkhead_bytes_dropped_total",
                "IP bytes dropped, by reason.",
                dropped_bytes,
            ),
        ];
        for (name, help, slot) in families {
            header(out, name, "counter", help);
            for (r, reason) in DropReason::VALUES.iter().enumerate() {
                let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", self.sum(slot(r)));
            }
        }
    }

    /// The enforced policy and its reloads.
    fn render_policy(&self, out: &mut String) {
        simple(
            out,
            "bulkhead_policy_version",
            "gauge",
            "Version of the policy enforced.",
            self.policy_version.load(Ordering::Relaxed),
        );
        header(
            out,
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
            out,
            "bulkhead_policy_reloads_total",
            "counter",
            "Policy swaps after start (SIGHUP reloads and controller snapshots).",
            self.policy_reloads.load(Ordering::Relaxed),
        );
        simple(
            out,
            "bulkhead_policy_reload_failures_total",
            "counter",
            "Policy reloads refused (invalid file); the previous policy stayed.",
            self.policy_reload_failures.load(Ordering::Relaxed),
        );
    }

    /// The decision log writer's counters.
    fn render_decision_log(&self, out: &mut String) {
        let log = &self.log;
        let series = [
            (
                "bulkhead_log_records_written_total",
                "Decision records written.",
                &log.written,
            ),
            (
                "bulkhead_log_records_dropped_total",
                "Decision records dropped because the log queue was full.",
                &log.dropped,
            ),
            (
                "bulkhead_log_write_errors_total",
                "Decision records lost to write errors.",
                &log.write_errors,
            ),
            (
                "bulkhead_log_rotations_total",
                "Decision log file rotations.",
                &log.rotations,
            ),
        ];
        for (name, help, value) in series {
            simple(out, name, "counter", help, value.load(Ordering::Relaxed));
        }
    }

    fn sum(&self, slot: usize) -> u64 {
        self.workers
            .iter()
            .map(|w| w.get(slot))
            .fold(0u64, u64::wrapping_add)
    }
}

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub(super) fn simple(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Milliseconds as Unix seconds with three decimals.
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::logsink::LogCounters;
    use crate::metrics::FlowTableState;

    /// Timestamps vary from run to run; everything else is fixed by the state.
    fn normalise(text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            let stamp = [
                "bulkhead_start_time_seconds ",
                "bulkhead_policy_last_applied_timestamp_seconds ",
            ]
            .into_iter()
            .find(|p| line.starts_with(p));
            match stamp {
                Some(p) => {
                    let v = &line[p.len()..];
                    let (s, ms) = v.split_once('.').expect("seconds.millis");
                    assert!(s.parse::<u64>().is_ok() && ms.len() == 3, "{line}");
                    assert!(ms.parse::<u16>().is_ok(), "{line}");
                    out.push_str(p);
                    out.push_str("TIMESTAMP");
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// The whole exposition for a known state, byte for byte: metric names, help texts, label
    /// names, label values and their order are what dashboards read.
    #[test]
    fn exposition_is_pinned() {
        let log = Arc::new(LogCounters::default());
        log.written.store(1234, Ordering::Relaxed);
        log.dropped.store(5, Ordering::Relaxed);
        log.write_errors.store(2, Ordering::Relaxed);
        log.rotations.store(3, Ordering::Relaxed);
        let m = Metrics::new(2, log);
        let (mut a, mut b) = (m.worker(0).local(), m.worker(1).local());
        a.forwarded(1500);
        a.forwarded(40);
        b.forwarded(576);
        a.transmitted(60);
        b.transmitted(1400);
        b.transmitted(40);
        a.held();
        a.held();
        b.held();
        a.dropped(DropReason::Malformed, 0);
        a.dropped(DropReason::FailClosed(Reason::InspectTimeout), 300);
        b.dropped(DropReason::FailClosed(Reason::Unknown), 7);
        b.dropped(DropReason::FlowLimit, 52);
        a.dropped(DropReason::FailClosed(Reason::FlowLimit), 48);
        b.dropped(DropReason::FailClosed(Reason::BadChecksum), 90);
        a.dropped(DropReason::OutOfState, 66);
        b.dropped(DropReason::FailClosed(Reason::HostChanged), 99);
        a.dropped(DropReason::Policy, 1000);
        b.dropped(DropReason::Policy, 24);
        use {Disposition as D, Reason as R, RecordAction as A};
        a.decision(A::Denied, D::Blocked, R::PolicyUpdate);
        a.decision(A::Allowed, D::Detected, R::Rule);
        b.decision(A::Allowed, D::Detected, R::Rule);
        b.decision(A::Allowed, D::Allowed, R::Unknown);
        a.decision(A::Denied, D::Detected, R::HostChanged);
        b.decision(A::Denied, D::Blocked, R::Default);
        b.decision(A::Denied, D::Blocked, R::NoSni);
        a.tun_read_error();
        b.tun_write_error();
        b.tun_write_error();
        a.set_flow_state(FlowTableState {
            active: 3,
            held_bytes: 700,
            flow_limit_refusals: 1,
            evictions: 5,
            capacity: 100,
        });
        b.set_flow_state(FlowTableState {
            active: 4,
            held_bytes: 20,
            flow_limit_refusals: 2,
            evictions: 6,
            capacity: 100,
        });
        a.publish(&m.worker(0));
        b.publish(&m.worker(1));
        m.set_tun_up(true);
        m.policy_applied(41, false);
        m.policy_applied(42, true);
        m.set_policy_origin(crate::metrics::PolicyOrigin::File);
        m.policy_reload_failed();
        let want = include_str!("testdata/exposition.prom").replace(
            "version=\"VERSION\"",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        );
        let got = normalise(&m.render());
        if got != want {
            for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
                assert_eq!(g, w, "line {}", i + 1);
            }
            assert_eq!(got.lines().count(), want.lines().count());
            assert_eq!(got, want);
        }
    }
}
