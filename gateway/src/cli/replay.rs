//! `bulkhead replay --policy FILE [--json] CAPTURE...`: push captured packets through the live
//! pipeline offline and print one decision record per flow.
//!
//! The captures' timestamps drive the pipeline's clock (idle expiry, inspection timeouts and the
//! record times all follow the capture). Each capture is a timeline of its own: at its end, the
//! flows still open are ended (end reason `shutdown`). Every decision is recorded, whatever the
//! rules' `log` setting, and each decision record carries its flow's end (`traffic`, `duration`,
//! `start_time`, `end_time`, `end_reason`), so there is one line per flow (plus one per second
//! ClientHello). Without `--json` the records are shown as a table with a summary.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::capture::CaptureReader;
use crate::pipeline::{Output, PacketMeta, Pipeline, PipelineConfig, PipelineStats};
use crate::record::{DecisionRecord, Disposition, RecordAction};

/// Arguments of `bulkhead replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The candidate policy to replay the captures against.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Print JSON lines in the decision-log schema instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Verify the TCP checksum of inspected segments (as the live gateway does). Off by default:
    /// captures taken on a sending host hold checksums left to the NIC (checksum offload).
    #[arg(long)]
    pub verify_checksums: bool,
    /// `gateway_id` written into the records.
    #[arg(long, default_value = "replay")]
    pub gateway_id: String,
    /// pcap or pcapng files, replayed one after the other.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

/// What a replay produced.
#[derive(Debug, Default)]
pub struct Replay {
    /// One record per decision, each with its flow's end merged in.
    pub records: Vec<DecisionRecord>,
    /// IP packets fed to the pipeline.
    pub packets: u64,
    /// Frames that carried no IP packet.
    pub skipped_non_ip: u64,
    /// Packets captured shorter than they were (fed anyway: the pipeline drops what it cannot
    /// parse).
    pub truncated: u64,
    /// The pipeline's counters at the end.
    pub stats: PipelineStats,
    /// Captures that ended with a read error (everything before the error was replayed).
    pub errors: Vec<String>,
}

/// Flow identity used to join a flow-end record to its decision records.
type Tuple = (IpAddr, u16, IpAddr, u16, u8);

fn tuple(r: &DecisionRecord) -> Tuple {
    (
        r.src_endpoint.ip,
        r.src_endpoint.port,
        r.dst_endpoint.ip,
        r.dst_endpoint.port,
        r.connection_info.protocol_num,
    )
}

/// Collects records, merging each flow end into the flow's decision records.
#[derive(Debug, Default)]
struct Merger {
    records: Vec<DecisionRecord>,
    open: HashMap<Tuple, Vec<usize>>,
}

impl Merger {
    fn take(&mut self, out: &mut Output) {
        for r in out.records.drain(..) {
            let t = tuple(&r);
            if r.is_flow_end() {
                for i in self.open.remove(&t).unwrap_or_default() {
                    let d = &mut self.records[i];
                    d.traffic = r.traffic;
                    d.duration = r.duration;
                    d.start_time = r.start_time;
                    d.end_time = r.end_time;
                    d.end_reason = r.end_reason;
                }
            } else {
                self.open.entry(t).or_default().push(self.records.len());
                self.records.push(r);
            }
        }
        out.transmit.clear();
    }
}

/// Replays `captures` through a pipeline deciding with `policy`.
pub fn replay(
    policy: policy_engine::CompiledPolicy,
    captures: &[PathBuf],
    gateway_id: &str,
    verify_checksums: bool,
) -> anyhow::Result<Replay> {
    let store = Arc::new(policy_engine::PolicyStore::new(policy));
    let config = PipelineConfig {
        gateway_id: gateway_id.to_owned(),
        log_all: true,
        ..PipelineConfig::default()
    };
    let mut pipe = Pipeline::new(config, store);
    let mut out = Output::default();
    let mut merger = Merger::default();
    let mut result = Replay::default();
    let meta = if verify_checksums {
        PacketMeta::default()
    } else {
        PacketMeta::unverified()
    };
    // The pipeline's clock: monotonic across captures, anchored to each capture's timestamps.
    let mut clock = Instant::now();
    for path in captures {
        let mut reader = CaptureReader::open(path)
            .with_context(|| format!("cannot read capture {}", path.display()))?;
        let mut anchor: Option<(Instant, Duration)> = None;
        loop {
            let packet = match reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    // Keep what was read: a corrupt tail should not hide the flows before it.
                    result.errors.push(format!("{}: {e}", path.display()));
                    break;
                }
            };
            let now = match anchor {
                None => {
                    anchor = Some((clock, packet.timestamp));
                    pipe.set_clock_anchor(clock, packet.timestamp.as_millis() as u64);
                    clock
                }
                // Timestamps that go backwards (merged captures) are clamped.
                Some((base, ts0)) => clock.max(base + packet.timestamp.saturating_sub(ts0)),
            };
            clock = now;
            if pipe.next_timeout().is_some_and(|t| t <= now) {
                pipe.handle_timeout(now, &mut out);
            }
            result.packets += 1;
            pipe.process(now, packet.packet, meta, &mut out);
            merger.take(&mut out);
        }
        pipe.shutdown(clock, &mut out);
        merger.take(&mut out);
        let s = reader.stats();
        result.skipped_non_ip += s.skipped_non_ip;
        result.truncated += s.truncated;
        clock += Duration::from_secs(1);
    }
    result.records = merger.records;
    result.stats = pipe.stats().clone();
    Ok(result)
}

/// Runs `bulkhead replay`.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match policy_engine::load_policy_file(&args.policy) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            anyhow::bail!("the policy {} does not load", args.policy.display());
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let policy = policy_engine::compile(&loaded.policy, 1);
    let r = replay(
        policy,
        &args.captures,
        &args.gateway_id,
        args.verify_checksums,
    )?;
    for e in &r.errors {
        eprintln!("bulkhead: warning: capture read stopped early: {e}");
    }
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if args.json {
        for rec in &r.records {
            writeln!(w, "{}", rec.to_json())?;
        }
    } else {
        write_table(&mut w, &r)?;
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The human-readable form: one row per decision, then totals.
pub fn write_table(w: &mut impl Write, r: &Replay) -> std::io::Result<()> {
    let rows: Vec<[String; 9]> = r
        .records
        .iter()
        .map(|rec| {
            let t = rec.traffic.unwrap_or_default();
            [
                endpoint(rec.src_endpoint.ip, rec.src_endpoint.port),
                endpoint(rec.dst_endpoint.ip, rec.dst_endpoint.port),
                rec.connection_info.protocol_name.clone(),
                rec.name().unwrap_or("-").to_owned(),
                match rec.action {
                    RecordAction::Allowed => "allow".to_owned(),
                    RecordAction::Denied => "deny".to_owned(),
                },
                format!("{:?}", rec.disposition).to_lowercase(),
                rec.policy.name.clone(),
                rec.reason.as_str().to_owned(),
                format!(
                    "{}/{} {}/{}",
                    t.packets_out, t.packets_in, t.bytes_out, t.bytes_in
                ),
            ]
        })
        .collect();
    let head = [
        "SOURCE",
        "DESTINATION",
        "PROTO",
        "NAME",
        "ACTION",
        "DISPOSITION",
        "RULE",
        "REASON",
        "PKTS OUT/IN BYTES OUT/IN",
    ];
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |w: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = width[i]));
            }
        }
        writeln!(w, "{}", s.trim_end())
    };
    line(w, &head)?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(w, &cells)?;
    }
    let count = |d: Disposition| r.records.iter().filter(|x| x.disposition == d).count();
    writeln!(w)?;
    writeln!(
        w,
        "{} decisions: {} allowed, {} blocked, {} detected (log-only or watch); {} packets{}{}",
        r.records.len(),
        count(Disposition::Allowed),
        count(Disposition::Blocked),
        count(Disposition::Detected),
        r.packets,
        if r.skipped_non_ip > 0 {
            format!(", {} non-IP frames skipped", r.skipped_non_ip)
        } else {
            String::new()
        },
        if r.truncated > 0 {
            format!(", {} truncated", r.truncated)
        } else {
            String::new()
        },
    )
}
