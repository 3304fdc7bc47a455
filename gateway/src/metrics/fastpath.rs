//! The kernel fast path's series (`bulkhead_fastpath_*`), present once the daemon has set up
//! the fast path's counters (whether or not it runs: `bulkhead_fastpath_supported` says).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::fastpath::HandOffFailure;

use super::labels::Label;
use super::render::{header, simple};
use super::Metrics;

impl Metrics {
    pub(super) fn render_fastpath(&self, out: &mut String) {
        let Some(s) = self.fastpath.get() else {
            return;
        };
        simple(
            out,
            "bulkhead_fastpath_supported",
            "gauge",
            "1 when decided flows are handed to the kernel (gateway.fast_path on, with \
             manage_routing, and the kernel has what it needs).",
            u64::from(s.supported.load(Ordering::Relaxed)),
        );
        simple(
            out,
            "bulkhead_fastpath_active",
            "gauge",
            "Flows the kernel forwards now, off the TUN.",
            s.active.load(Ordering::Relaxed),
        );
        let counters = [
            (
                "bulkhead_fastpath_handed_off_total",
                "Flows handed to the kernel after their verdict.",
                &s.handed_off,
            ),
            (
                "bulkhead_fastpath_taken_back_total",
                "Handed-off flows taken back after a policy update denied them.",
                &s.taken_back,
            ),
            (
                "bulkhead_fastpath_released_total",
                "Handed-off flows released when the gateway stopped tracking them (idle, shutdown).",
                &s.released,
            ),
            (
                "bulkhead_fastpath_ended_total",
                "Handed-off flows whose end the kernel reported.",
                &s.ended,
            ),
            (
                "bulkhead_fastpath_events_lost_total",
                "Conntrack events lost (socket overflow; a dump catches up) and reports dropped on a full worker inbox.",
                &s.events_lost,
            ),
        ];
        for (name, help, v) in counters {
            simple(out, name, "counter", help, v.load(Ordering::Relaxed));
        }
        header(
            out,
            "bulkhead_fastpath_handoff_seconds_total",
            "counter",
            "Time spent handing flows off (netlink, on the hand-off thread, never on a worker); \
             divided by bulkhead_fastpath_handed_off_total, the cost of one.",
        );
        let ns = s.handoff_ns.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "bulkhead_fastpath_handoff_seconds_total {}.{:09}",
            ns / 1_000_000_000,
            ns % 1_000_000_000
        );
        header(
            out,
            "bulkhead_fastpath_handoff_failures_total",
            "counter",
            "Hand-offs that did not happen, by reason; the flow stayed on the TUN.",
        );
        for (i, reason) in HandOffFailure::VALUES.iter().enumerate() {
            let _ = writeln!(
                out,
                "bulkhead_fastpath_handoff_failures_total{{reason=\"{reason}\"}} {}",
                s.failures[i].load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fastpath::FastPathStats;
    use crate::logsink::LogCounters;

    #[test]
    fn fastpath_series_follow_the_counters() {
        let m = Metrics::new(1, Arc::new(LogCounters::default()));
        assert!(!m.render().contains("bulkhead_fastpath_"));
        let s = Arc::new(FastPathStats::default());
        m.set_fastpath_stats(s.clone());
        s.supported.store(true, Ordering::Relaxed);
        s.handed_off.fetch_add(3, Ordering::Relaxed);
        s.active.store(2, Ordering::Relaxed);
        s.failed(HandOffFailure::QueueFull);
        s.failed(HandOffFailure::QueueFull);
        let t = m.render();
        for line in [
            "bulkhead_fastpath_supported 1",
            "bulkhead_fastpath_active 2",
            "bulkhead_fastpath_handed_off_total 3",
            "bulkhead_fastpath_taken_back_total 0",
            "bulkhead_fastpath_handoff_failures_total{reason=\"queue_full\"} 2",
            "bulkhead_fastpath_handoff_failures_total{reason=\"netlink\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
        }
    }
}
