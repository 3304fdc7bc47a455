//! The policy's origin and the controller client's series.
//!
//! `bulkhead_policy_source` has one series per [`PolicyOrigin`], 1 for the origin in force and
//! 0 for the others, so a dashboard can alert on `source="deny_all"` or on a fleet member that
//! stays on `last_known_good`. The controller series exist only when `[controller]` is
//! configured.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::labels::{Label, PolicyOrigin};
use super::render::{header, simple};
use super::Metrics;

impl Metrics {
    /// `bulkhead_policy_source{source}`: every origin, the one in force at 1.
    pub(super) fn render_policy_source(&self, out: &mut String) {
        header(
            out,
            "bulkhead_policy_source",
            "gauge",
            "Where the enforced policy came from; 1 for the origin in force.",
        );
        let current = self.policy_origin.load(Ordering::Relaxed);
        for (i, source) in PolicyOrigin::VALUES.iter().enumerate() {
            let _ = writeln!(
                out,
                "bulkhead_policy_source{{source=\"{source}\"}} {}",
                u8::from(i == current)
            );
        }
    }

    /// The controller client's counters, when a client runs.
    pub(super) fn render_controller(&self, out: &mut String) {
        let Some(stats) = self.control.get() else {
            return;
        };
        simple(
            out,
            "bulkhead_controller_connected",
            "gauge",
            "1 while the stream to the controller is open.",
            u64::from(stats.connected.load(Ordering::Relaxed)),
        );
        let series = [
            (
                "bulkhead_controller_snapshots_applied_total",
                "Controller snapshots applied, persisted and acknowledged.",
                &stats.applied,
            ),
            (
                "bulkhead_controller_snapshots_rejected_total",
                "Controller snapshots refused (NACKed); the previous policy stayed.",
                &stats.nacks,
            ),
            (
                "bulkhead_controller_record_batches_sent_total",
                "Decision record batches sent to the controller.",
                &stats.sent_batches,
            ),
            (
                "bulkhead_controller_record_batches_dropped_total",
                "Decision record batches dropped while the controller was away too long.",
                &stats.dropped_batches,
            ),
            (
                "bulkhead_controller_records_dropped_total",
                "Decision records not queued for the controller (queue full); the log has them.",
                &stats.dropped_records,
            ),
        ];
        for (name, help, value) in series {
            simple(out, name, "counter", help, value.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::control::ControlStats;
    use crate::logsink::LogCounters;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
    }

    #[test]
    fn source_has_one_series_per_origin_and_one_is_set() {
        let m = Metrics::new(1, Arc::new(LogCounters::default()));
        let t = m.render();
        assert_eq!(
            line(&t, "bulkhead_policy_source{source=\"deny_all\"}"),
            Some("1")
        );
        m.set_policy_origin(PolicyOrigin::LastKnownGood);
        let t = m.render();
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("bulkhead_policy_source{"))
                .count(),
            PolicyOrigin::VALUES.len()
        );
        assert_eq!(
            line(&t, "bulkhead_policy_source{source=\"last_known_good\"}"),
            Some("1")
        );
        assert_eq!(
            line(&t, "bulkhead_policy_source{source=\"deny_all\"}"),
            Some("0")
        );
        // No client, no controller series.
        assert!(!t.contains("bulkhead_controller_"));
    }

    #[test]
    fn controller_stats_are_exported() {
        let m = Metrics::new(1, Arc::new(LogCounters::default()));
        let stats = Arc::new(ControlStats::default());
        stats.connected.store(true, Ordering::Relaxed);
        stats.applied.store(3, Ordering::Relaxed);
        stats.nacks.store(1, Ordering::Relaxed);
        stats.sent_batches.store(7, Ordering::Relaxed);
        stats.dropped_batches.store(2, Ordering::Relaxed);
        stats.dropped_records.store(9, Ordering::Relaxed);
        m.set_control_stats(stats);
        let t = m.render();
        for (series, want) in [
            ("bulkhead_controller_connected", "1"),
            ("bulkhead_controller_snapshots_applied_total", "3"),
            ("bulkhead_controller_snapshots_rejected_total", "1"),
            ("bulkhead_controller_record_batches_sent_total", "7"),
            ("bulkhead_controller_record_batches_dropped_total", "2"),
            ("bulkhead_controller_records_dropped_total", "9"),
        ] {
            assert_eq!(line(&t, series), Some(want), "{series}");
        }
    }
}
