//! The results of one harness run and their markdown table.

use std::fmt::Write as _;

/// The set-ups measured in one run, in the order they are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// The gateway namespace forwards with the kernel; no gateway process.
    Kernel,
    /// The naive TUN forwarder ([`super::passthrough`]): the TUN and routing of the gateway,
    /// every frame written back untouched.
    TunPassthrough,
    /// `bulkhead run` with a policy that permits everything (kernel fast path on where the
    /// kernel supports it, the default).
    GatewayPermitAll,
    /// The same with `fast_path = false`: every packet crosses the TUN.
    GatewayNoFastPath,
    /// `bulkhead run` with the generated 10,000-rule policy.
    GatewayLargePolicy,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::Kernel,
        Setup::TunPassthrough,
        Setup::GatewayPermitAll,
        Setup::GatewayNoFastPath,
        Setup::GatewayLargePolicy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Setup::Kernel => "kernel forwarding",
            Setup::TunPassthrough => "TUN pass-through",
            Setup::GatewayPermitAll => "gateway, permit all",
            Setup::GatewayNoFastPath => "gateway, permit all, no fast path",
            Setup::GatewayLargePolicy => "gateway, 10k rules",
        }
    }

    /// The name `--setups` takes.
    pub fn key(self) -> &'static str {
        match self {
            Setup::Kernel => "kernel",
            Setup::TunPassthrough => "passthrough",
            Setup::GatewayPermitAll => "gateway",
            Setup::GatewayNoFastPath => "gateway-no-fast-path",
            Setup::GatewayLargePolicy => "gateway-10k",
        }
    }

    /// The set-up named `key` (see [`Setup::key`]).
    pub fn from_key(key: &str) -> Option<Setup> {
        Setup::ALL.into_iter().find(|s| s.key() == key)
    }
}

/// One figure, or why it is missing.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Value(f64),
    Missing(String),
}

impl Figure {
    pub fn value(&self) -> Option<f64> {
        match self {
            Figure::Value(v) => Some(*v),
            Figure::Missing(_) => None,
        }
    }
}

/// The figures of one set-up.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupResult {
    pub setup: Setup,
    /// iperf3, one TCP stream, bits per second received.
    pub tcp_1_stream_bps: Figure,
    /// iperf3, four TCP streams, bits per second received.
    pub tcp_4_streams_bps: Figure,
    /// Complete TLS 1.3 handshakes (new TCP connection each) per second.
    pub tls_handshakes_per_s: Figure,
    /// Median round-trip time of small TCP ping-pongs, microseconds.
    pub rtt_median_us: Figure,
    /// 99th percentile of the same round trips, microseconds.
    pub rtt_p99_us: Figure,
}

impl SetupResult {
    pub fn missing(setup: Setup, why: &str) -> SetupResult {
        let m = || Figure::Missing(why.to_owned());
        SetupResult {
            setup,
            tcp_1_stream_bps: m(),
            tcp_4_streams_bps: m(),
            tls_handshakes_per_s: m(),
            rtt_median_us: m(),
            rtt_p99_us: m(),
        }
    }
}

/// A full run: the results of every set-up, in [`Setup::ALL`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub results: Vec<SetupResult>,
    pub notes: Vec<String>,
}

impl Report {
    fn get(&self, setup: Setup) -> Option<&SetupResult> {
        self.results.iter().find(|r| r.setup == setup)
    }

    /// The markdown table: one row per figure, one column per set-up; gateway columns carry the
    /// ratio to kernel forwarding (throughput and rate: gateway / kernel; latency: the added
    /// microseconds).
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let columns = present(std::slice::from_ref(self));
        out.push_str("| figure |");
        for s in &columns {
            let _ = write!(out, " {} |", s.label());
        }
        out.push_str("\n|---|");
        for _ in &columns {
            out.push_str("---|");
        }
        out.push('\n');
        let kernel = self.get(Setup::Kernel);
        for (name, pick, kind) in ROWS {
            let _ = write!(out, "| {name} |");
            let base = kernel.and_then(|k| pick(k).value());
            for s in columns.iter().copied() {
                let cell = match self.get(s).map(pick) {
                    None => "not run".to_owned(),
                    Some(Figure::Missing(_)) => "not measured".to_owned(),
                    Some(Figure::Value(v)) => {
                        let shown = kind.show(*v);
                        match (s, base) {
                            (Setup::Kernel, _) | (_, None) => shown,
                            (_, Some(b)) => format!("{shown} ({})", kind.compare(*v, b)),
                        }
                    }
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        // Why figures are missing: each distinct reason once per set-up, on one line.
        let mut missing: Vec<(Setup, String)> = Vec::new();
        for r in &self.results {
            for f in [
                &r.tcp_1_stream_bps,
                &r.tcp_4_streams_bps,
                &r.tls_handshakes_per_s,
                &r.rtt_median_us,
                &r.rtt_p99_us,
            ] {
                if let Figure::Missing(why) = f {
                    let line = one_line(why);
                    if !missing.iter().any(|(s, w)| *s == r.setup && *w == line) {
                        missing.push((r.setup, line));
                    }
                }
            }
        }
        if !missing.is_empty() {
            out.push_str("\nNot measured:\n");
            for (setup, why) in missing {
                let _ = writeln!(out, "- {}: {why}", setup.label());
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        out
    }
}

type Pick = fn(&SetupResult) -> &Figure;

/// The set-ups measured in any of the reports, in [`Setup::ALL`] order (the kernel's always, as
/// the baseline).
fn present(reports: &[Report]) -> Vec<Setup> {
    Setup::ALL
        .into_iter()
        .filter(|s| *s == Setup::Kernel || reports.iter().any(|r| r.get(*s).is_some()))
        .collect()
}

/// The rows of the table: name, figure, how a gateway figure compares with the kernel's.
const ROWS: [(&str, Pick, Kind); 5] = [
    (
        "TCP, 1 stream (iperf3)",
        |r| &r.tcp_1_stream_bps,
        Kind::Throughput,
    ),
    (
        "TCP, 4 streams (iperf3)",
        |r| &r.tcp_4_streams_bps,
        Kind::Throughput,
    ),
    (
        "new TLS connections per second",
        |r| &r.tls_handshakes_per_s,
        Kind::Rate,
    ),
    (
        "TCP round trip, median",
        |r| &r.rtt_median_us,
        Kind::Latency,
    ),
    ("TCP round trip, p99", |r| &r.rtt_p99_us, Kind::Latency),
];

/// Several runs in one table: for each figure and gateway set-up, the median over the runs of
/// the run's own comparison with kernel forwarding (ratio, or added microseconds), with the
/// smallest and largest. Each run compares against the kernel baseline it measured itself, so
/// a run on a busier moment does not skew the others.
pub fn summarize(reports: &[Report]) -> String {
    let mut out = String::new();
    let gateways: Vec<Setup> = present(reports)
        .into_iter()
        .filter(|s| *s != Setup::Kernel)
        .collect();
    let _ = write!(
        out,
        "| figure (median of {} runs: min-max) |",
        reports.len()
    );
    for s in &gateways {
        let _ = write!(out, " {} |", s.label());
    }
    out.push_str("\n|---|");
    for _ in &gateways {
        out.push_str("---|");
    }
    out.push('\n');
    for (name, pick, kind) in ROWS {
        let _ = write!(out, "| {name} |");
        for s in &gateways {
            let mut values: Vec<f64> = reports
                .iter()
                .filter_map(|r| {
                    let base = pick(r.get(Setup::Kernel)?).value()?;
                    let v = pick(r.get(*s)?).value()?;
                    kind.delta(v, base)
                })
                .collect();
            values.sort_by(f64::total_cmp);
            let cell = match (values.first(), values.last()) {
                (Some(lo), Some(hi)) => {
                    let n = values.len();
                    let median = if n % 2 == 1 {
                        values[n / 2]
                    } else {
                        (values[n / 2 - 1] + values[n / 2]) / 2.0
                    };
                    format!(
                        "{} ({}-{}, {n} runs)",
                        kind.show_delta(median),
                        kind.show_delta(*lo),
                        kind.show_delta(*hi)
                    )
                }
                _ => "not measured".to_owned(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

/// The text on one line (newlines and runs of spaces folded), at most 300 characters.
fn one_line(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &folded[..i]),
        None => folded,
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Throughput,
    Rate,
    Latency,
}

impl Kind {
    fn show(self, v: f64) -> String {
        match self {
            Kind::Throughput => format!("{:.2} Gbit/s", v / 1e9),
            Kind::Rate => format!("{v:.0}/s"),
            Kind::Latency => format!("{v:.1} us"),
        }
    }

    /// The comparison as a number: the ratio (throughput, rate) or the added microseconds.
    fn delta(self, v: f64, base: f64) -> Option<f64> {
        match self {
            Kind::Throughput | Kind::Rate if base > 0.0 => Some(v / base),
            Kind::Throughput | Kind::Rate => None,
            Kind::Latency => Some(v - base),
        }
    }

    fn show_delta(self, d: f64) -> String {
        match self {
            Kind::Throughput | Kind::Rate => format!("{d:.2}x"),
            Kind::Latency => format!("{d:+.1} us"),
        }
    }

    fn compare(self, v: f64, base: f64) -> String {
        match self {
            Kind::Throughput | Kind::Rate if base > 0.0 => format!("{:.2}x", v / base),
            Kind::Throughput | Kind::Rate => "n/a".to_owned(),
            Kind::Latency => format!("{:+.1} us", v - base),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(setup: Setup, scale: f64) -> SetupResult {
        SetupResult {
            setup,
            tcp_1_stream_bps: Figure::Value(10e9 * scale),
            tcp_4_streams_bps: Figure::Value(20e9 * scale),
            tls_handshakes_per_s: Figure::Value(1000.0 * scale),
            rtt_median_us: Figure::Value(30.0 / scale),
            rtt_p99_us: Figure::Value(60.0 / scale),
        }
    }

    #[test]
    fn table_shows_ratios_and_added_latency() {
        let report = Report {
            results: vec![
                result(Setup::Kernel, 1.0),
                result(Setup::GatewayPermitAll, 0.5),
                SetupResult::missing(Setup::GatewayLargePolicy, "daemon failed\n  to start"),
            ],
            notes: vec!["note one".to_owned()],
        };
        let md = report.to_markdown();
        let lines: Vec<&str> = md.lines().collect();
        // Only the set-ups that were run have a column.
        assert_eq!(
            lines[0],
            "| figure | kernel forwarding | gateway, permit all | gateway, 10k rules |"
        );
        assert_eq!(lines[1], "|---|---|---|---|");
        assert_eq!(
            lines[2],
            "| TCP, 1 stream (iperf3) | 10.00 Gbit/s | 5.00 Gbit/s (0.50x) | not measured |"
        );
        assert!(
            lines[4].contains("| 1000/s | 500/s (0.50x) |"),
            "{}",
            lines[4]
        );
        assert!(
            lines[5].contains("| 30.0 us | 60.0 us (+30.0 us) |"),
            "{}",
            lines[5]
        );
        // The reason is folded onto one line.
        assert!(
            md.contains("\nNot measured:\n- gateway, 10k rules: daemon failed to start\n"),
            "{md}"
        );
        assert_eq!(
            md.matches("daemon failed").count(),
            1,
            "one line per distinct reason"
        );
        assert!(md.ends_with("\nnote one\n"));
    }

    #[test]
    fn summary_takes_the_median_of_each_runs_comparison() {
        let run = |kernel: f64, gateway: f64| Report {
            results: vec![
                result(Setup::Kernel, kernel),
                result(Setup::GatewayPermitAll, gateway),
                SetupResult::missing(Setup::GatewayNoFastPath, "x"),
            ],
            notes: vec![],
        };
        // Ratios 0.5, 0.25 and 1.0 (median 0.5); the kernel baseline differs in each run.
        let md = summarize(&[run(1.0, 0.5), run(2.0, 0.5), run(0.5, 0.5)]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| figure (median of 3 runs: min-max) | gateway, permit all | \
             gateway, permit all, no fast path |"
        );
        assert_eq!(
            lines[2],
            "| TCP, 1 stream (iperf3) | 0.50x (0.25x-1.00x, 3 runs) | not measured |"
        );
        // Latency 30/scale: added 30, 45 and 0 us.
        assert!(
            lines[5].contains("| +30.0 us (+0.0 us-+45.0 us, 3 runs) |"),
            "{}",
            lines[5]
        );
    }

    #[test]
    fn setups_are_named_on_the_command_line_by_their_keys() {
        for s in Setup::ALL {
            assert_eq!(Setup::from_key(s.key()), Some(s));
        }
        assert_eq!(Setup::from_key("gateway-fast"), None);
    }

    #[test]
    fn no_ratio_without_a_kernel_baseline() {
        let report = Report {
            results: vec![
                SetupResult::missing(Setup::Kernel, "x"),
                result(Setup::GatewayPermitAll, 1.0),
            ],
            notes: vec![],
        };
        let md = report.to_markdown();
        assert!(md.contains("| not measured | 10.00 Gbit/s |"), "{md}");
        assert!(md.contains("- kernel forwarding: x\n"), "{md}");
    }
}
