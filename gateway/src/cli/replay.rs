//! `bulkhead replay --policy FILE [--json] CAPTURE...`: push captured packets through the live
//! pipeline offline and print one decision record per flow.
//!
//! The captures' timestamps drive the pipeline's clock (idle expiry, inspection timeouts and the
//! record times all follow the capture). Each capture is a timeline of its own: at its end, the
//! flows still open are ended (end reason `shutdown`). Every decision is recorded, whatever the
//! rules' `log` setting, and each decision record carries its flow's end (`traffic`, `duration`,
//! `start_time`, `end_time`, `end_reason`), so there is one line per flow (plus one per second
//! ClientHello). Without `--json` the records are shown as a table with a summary.
//!
//! Records are written as their flows end, not gathered until the end: memory is bounded by the
//! flows open at one time (the flow table), whatever the length of the captures. A capture that
//! cannot be opened, or that is corrupt part way, is named on standard error, the records of
//! the others (and of its packets before the damage) are still written, and the exit status
//! is [`EXIT_CAPTURE_ERROR`].

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::CaptureReader;
use crate::input::{echo_bounded, echo_path};
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
    /// `gateway_id` written into the records (at most 128 printable characters, as
    /// `gateway.id`).
    #[arg(long, default_value = "replay", value_parser = parse_gateway_id)]
    pub gateway_id: String,
    /// The DNS check (`sni_dns_check`): a file of answers, one name per line followed by its
    /// addresses (`api.openai.com 162.159.140.245 2606:4700::6812:1`). Replay asks no resolver:
    /// names are confirmed by these and by the DNS answers in the captures; others are
    /// `sni_dns_unverified`.
    #[arg(long, value_name = "FILE")]
    pub dns_answers: Option<PathBuf>,
    /// Learn DNS answers in the captures only from this resolver (repeatable); by default from
    /// any resolver whose answer matches a query in the capture.
    #[arg(long = "dns-learn-from", value_name = "IP")]
    pub dns_learn_from: Vec<IpAddr>,
    /// pcap or pcapng files, replayed one after the other.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

/// The same rule as `gateway.id` in `gateway.toml`: records from a replay and from a gateway
/// carry ids of one shape.
fn parse_gateway_id(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
        return Err("must be 1 to 128 bytes of printable characters".to_owned());
    }
    Ok(s.to_owned())
}

/// What a replay produced, besides its records.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// IP packets fed to the pipeline.
    pub packets: u64,
    /// Frames that carried no IP packet.
    pub skipped_non_ip: u64,
    /// Packets captured shorter than they were (fed anyway: the pipeline drops what it cannot
    /// parse).
    pub truncated: u64,
    /// The pipeline's counters at the end.
    pub stats: PipelineStats,
    /// Captures that could not be opened or ended with a read error (everything before the
    /// error was replayed), one message each.
    pub errors: Vec<String>,
}

/// What a replay produced, records collected (see [`replay`]).
#[derive(Debug, Default)]
pub struct Replay {
    /// One record per decision, each with its flow's end merged in, in the order flows ended.
    pub records: Vec<DecisionRecord>,
    /// IP packets fed to the pipeline.
    pub packets: u64,
    /// Frames that carried no IP packet.
    pub skipped_non_ip: u64,
    /// Packets captured shorter than they were.
    pub truncated: u64,
    /// The pipeline's counters at the end.
    pub stats: PipelineStats,
    /// Captures that could not be read, or not to their end.
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

/// Decision records of one flow held back for its end. A flow that keeps sending ClientHellos
/// has its further decisions written at once, without the end, so what is held stays bounded
/// by the flow table rather than by the capture.
const MAX_HELD_PER_FLOW: usize = 8;

/// Merges each flow end into the flow's decision records and hands them on as the flow ends:
/// memory is bounded by the flows open at one time, not by the length of the capture.
struct Merger<'a> {
    open: HashMap<Tuple, Vec<(u64, DecisionRecord)>>,
    /// Decisions seen so far: each record's sequence number is its place in decision order.
    decided: u64,
    sink: &'a mut dyn FnMut(u64, DecisionRecord) -> std::io::Result<()>,
}

impl Merger<'_> {
    fn take(&mut self, out: &mut Output) -> std::io::Result<()> {
        out.transmit.clear();
        for r in out.records.drain(..) {
            let t = tuple(&r);
            if !r.is_flow_end() {
                let seq = self.decided;
                self.decided += 1;
                let held = self.open.entry(t).or_default();
                if held.len() < MAX_HELD_PER_FLOW {
                    held.push((seq, r));
                } else {
                    (self.sink)(seq, r)?;
                }
                continue;
            }
            match self.open.remove(&t) {
                Some(decisions) => {
                    for (seq, mut d) in decisions {
                        d.traffic = r.traffic;
                        d.duration = r.duration;
                        d.start_time = r.start_time;
                        d.end_time = r.end_time;
                        d.end_reason = r.end_reason;
                        (self.sink)(seq, d)?;
                    }
                }
                // A flow that ended without a decision record is still a flow: its end is
                // its record.
                None => {
                    let seq = self.decided;
                    self.decided += 1;
                    (self.sink)(seq, r)?;
                }
            }
        }
        Ok(())
    }

    /// Writes what is still held (flows whose end never came), at the end of a capture.
    fn flush(&mut self) -> std::io::Result<()> {
        // In decision order, so the output does not depend on the hash map's order.
        let mut left: Vec<(u64, DecisionRecord)> = self.open.drain().flat_map(|(_, d)| d).collect();
        left.sort_unstable_by_key(|(seq, _)| *seq);
        for (seq, d) in left {
            (self.sink)(seq, d)?;
        }
        Ok(())
    }
}

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// `gateway_id` written into the records.
    pub gateway_id: String,
    /// Verify the TCP checksum of inspected segments.
    pub verify_checksums: bool,
    /// The DNS check (`sni_dns_check`): names and the addresses they resolve to, taken as
    /// answers that never expire (`--dns-answers`).
    pub dns_answers: Vec<(String, Vec<IpAddr>)>,
    /// Resolvers whose answers in the captures are learned; empty: any resolver's (a capture
    /// shows what its workloads were told).
    pub dns_learn_from: Vec<IpAddr>,
}

/// Replays `captures` through a pipeline deciding with `policy`, collecting every record, in
/// the order the decisions were made. For tests and small captures: the records are kept in
/// memory; `bulkhead replay` streams them with [`replay_to`].
pub fn replay(
    policy: policy_engine::CompiledPolicy,
    captures: &[PathBuf],
    gateway_id: &str,
    verify_checksums: bool,
) -> anyhow::Result<Replay> {
    let opts = ReplayOptions {
        gateway_id: gateway_id.to_owned(),
        verify_checksums,
        ..ReplayOptions::default()
    };
    replay_with(policy, captures, &opts)
}

/// [`replay`] with every option.
pub fn replay_with(
    policy: policy_engine::CompiledPolicy,
    captures: &[PathBuf],
    opts: &ReplayOptions,
) -> anyhow::Result<Replay> {
    let mut records = Vec::new();
    let s = replay_sequenced(policy, captures, opts, &mut |seq, r| {
        records.push((seq, r));
        Ok(())
    })?;
    records.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(Replay {
        records: records.into_iter().map(|(_, r)| r).collect(),
        packets: s.packets,
        skipped_non_ip: s.skipped_non_ip,
        truncated: s.truncated,
        stats: s.stats,
        errors: s.errors,
    })
}

/// Replays `captures`, handing each record to `sink` as soon as its flow has ended. A capture
/// that cannot be opened, or not read to its end, is reported in
/// [`ReplaySummary::errors`] and the others are still replayed. Only an error of `sink` (a
/// failed write) stops the replay.
pub fn replay_to(
    policy: policy_engine::CompiledPolicy,
    captures: &[PathBuf],
    opts: &ReplayOptions,
    sink: &mut dyn FnMut(DecisionRecord) -> std::io::Result<()>,
) -> std::io::Result<ReplaySummary> {
    replay_sequenced(policy, captures, opts, &mut |_, r| sink(r))
}

/// How replay treats the DNS check: nothing is asked of any resolver (a capture replays the
/// past, and today's answers would not be the ones the gateway had then). A name is confirmed
/// by the answers the capture holds (DNS responses to queries in the capture, learned as the
/// live gateway learns them) or by the answer file; a name neither knows is
/// `sni_dns_unverified`: refused under `enforce`, noted on the record under `log`.
fn replay_dns(opts: &ReplayOptions, start: Instant) -> crate::pipeline::DnsCheckConfig {
    // Answers from the file hold for the whole replay; learned ones keep their TTLs.
    const FOREVER: Duration = Duration::from_secs(10 * 365 * 86_400);
    let cache = crate::dns::DnsCache::new(crate::dns::CacheConfig {
        max_ttl: FOREVER,
        ..Default::default()
    });
    for (name, addrs) in &opts.dns_answers {
        let with_ttl: Vec<(IpAddr, u32)> = addrs.iter().map(|&a| (a, u32::MAX)).collect();
        cache.insert(name, &with_ttl, start);
    }
    crate::pipeline::DnsCheckConfig {
        cache: Some(Arc::new(cache)),
        learn_from: opts.dns_learn_from.clone(),
        learn_from_any: opts.dns_learn_from.is_empty(),
        offline: true,
        ..Default::default()
    }
}

/// Reads an answer file for `--dns-answers`: one name per line followed by its addresses,
/// separated by spaces or tabs; `#` starts a comment. Every error is reported with its line.
pub fn read_dns_answers(text: &str) -> Result<Vec<(String, Vec<IpAddr>)>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(raw) = words.next() else {
            continue;
        };
        let name = match policy_engine::normalize_name(raw) {
            Ok(n) => n.into_owned(),
            Err(e) => {
                errors.push(format!(
                    "line {}: invalid name `{}`: {e}",
                    i + 1,
                    echo_bounded(raw, 80)
                ));
                continue;
            }
        };
        let mut addrs = Vec::new();
        for w in words {
            match w.parse::<IpAddr>() {
                Ok(a) => addrs.push(a),
                Err(_) => errors.push(format!(
                    "line {}: `{}` is not an IP address",
                    i + 1,
                    echo_bounded(w, 80)
                )),
            }
        }
        if addrs.len() > crate::dns::MAX_ADDRS_PER_NAME {
            errors.push(format!(
                "line {}: at most {} addresses per name",
                i + 1,
                crate::dns::MAX_ADDRS_PER_NAME
            ));
        }
        out.push((name, addrs));
        if out.len() > 1_000_000 {
            errors.push("more than 1000000 names".to_owned());
            break;
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// [`replay_to`], each record handed on with its place in decision order.
fn replay_sequenced(
    policy: policy_engine::CompiledPolicy,
    captures: &[PathBuf],
    opts: &ReplayOptions,
    sink: &mut dyn FnMut(u64, DecisionRecord) -> std::io::Result<()>,
) -> std::io::Result<ReplaySummary> {
    let store = Arc::new(policy_engine::PolicyStore::new(policy));
    // The pipeline's clock: monotonic across captures, anchored to each capture's timestamps.
    let mut clock = Instant::now();
    let config = PipelineConfig {
        gateway_id: opts.gateway_id.clone(),
        log_all: true,
        dns: replay_dns(opts, clock),
        ..PipelineConfig::default()
    };
    let mut pipe = Pipeline::new(config, store);
    let mut out = Output::default();
    let mut merger = Merger {
        open: HashMap::new(),
        decided: 0,
        sink,
    };
    let mut summary = ReplaySummary::default();
    let meta = if opts.verify_checksums {
        PacketMeta::default()
    } else {
        PacketMeta::unverified()
    };
    for path in captures {
        let mut reader = match CaptureReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                summary
                    .errors
                    .push(format!("{}: cannot read: {e}", echo_path(path)));
                continue;
            }
        };
        let mut anchor: Option<(Instant, Duration)> = None;
        loop {
            let packet = match reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    // Keep what was read: a corrupt tail should not hide the flows before it.
                    summary.errors.push(format!(
                        "{}: read stopped early (the packets before were replayed): {e}",
                        echo_path(path)
                    ));
                    break;
                }
            };
            let now = match anchor {
                None => {
                    anchor = Some((clock, packet.timestamp));
                    let ms = u64::try_from(packet.timestamp.as_millis()).unwrap_or(u64::MAX);
                    pipe.set_clock_anchor(clock, ms);
                    clock
                }
                // Timestamps that go backwards (merged captures) are clamped.
                Some((base, ts0)) => clock.max(base + packet.timestamp.saturating_sub(ts0)),
            };
            clock = now;
            if pipe.next_timeout().is_some_and(|t| t <= now) {
                pipe.handle_timeout(now, &mut out);
            }
            summary.packets += 1;
            pipe.process(now, packet.packet, meta, &mut out);
            merger.take(&mut out)?;
        }
        pipe.shutdown(clock, &mut out);
        merger.take(&mut out)?;
        merger.flush()?;
        let s = reader.stats();
        summary.skipped_non_ip += s.skipped_non_ip;
        summary.truncated += s.truncated;
        clock += Duration::from_secs(1);
    }
    summary.stats = pipe.stats().clone();
    Ok(summary)
}

/// Exit status when a capture could not be read (completely): the records of the rest were
/// still printed.
pub const EXIT_CAPTURE_ERROR: u8 = 1;

/// Runs `bulkhead replay`.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match crate::runtime::policy::load_policy_file(&args.policy) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            anyhow::bail!("the policy {} does not load", echo_path(&args.policy));
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let policy = policy_engine::compile(&loaded.policy, 1);
    let dns_answers = match &args.dns_answers {
        None => Vec::new(),
        Some(path) => {
            let text = crate::input::read_regular_text(path, 256 * 1024 * 1024)
                .map_err(|e| anyhow::anyhow!("{}: {e}", echo_path(path)))?;
            match read_dns_answers(&text) {
                Ok(a) => a,
                Err(errors) => {
                    for e in errors.iter().take(100) {
                        eprintln!("{}: {e}", echo_path(path));
                    }
                    anyhow::bail!("the DNS answer file {} is invalid", echo_path(path));
                }
            }
        }
    };
    let opts = ReplayOptions {
        gateway_id: args.gateway_id.clone(),
        verify_checksums: args.verify_checksums,
        dns_answers,
        dns_learn_from: args.dns_learn_from.clone(),
    };
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut table = Table::default();
    let summary = if args.json {
        replay_to(policy, &args.captures, &opts, &mut |rec| {
            writeln!(w, "{}", rec.to_json())
        })?
    } else {
        table.header(&mut w)?;
        replay_to(policy, &args.captures, &opts, &mut |rec| {
            table.row(&mut w, &rec)
        })?
    };
    if !args.json {
        table.footer(&mut w, &summary)?;
    }
    w.flush()?;
    for e in &summary.errors {
        eprintln!("bulkhead: error: capture {e}");
    }
    if summary.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "bulkhead: error: {} of {} capture(s) could not be read completely",
            summary.errors.len(),
            args.captures.len()
        );
        Ok(ExitCode::from(EXIT_CAPTURE_ERROR))
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Column headings of the table, and the width each column is padded to. Rows are written as
/// flows end, before the longest cell is known: a longer cell widens its row only.
const COLUMNS: [(&str, usize); 9] = [
    ("SOURCE", 21),
    ("DESTINATION", 21),
    ("PROTO", 5),
    ("NAME", 30),
    ("ACTION", 6),
    ("DISPOSITION", 11),
    ("RULE", 20),
    ("REASON", 14),
    ("PKTS OUT/IN BYTES OUT/IN", 0),
];

/// Longest cell written; a name read from a capture is untrusted and may be anything.
const MAX_CELL_CHARS: usize = 256;

/// The human-readable form, written row by row: one row per decision, then totals.
#[derive(Debug, Default)]
pub struct Table {
    decisions: u64,
    allowed: u64,
    blocked: u64,
    detected: u64,
}

impl Table {
    fn line(w: &mut dyn Write, cells: &[&str]) -> std::io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let c = echo_bounded(c, MAX_CELL_CHARS);
            if i + 1 == cells.len() {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = COLUMNS[i].1));
            }
        }
        writeln!(w, "{}", s.trim_end())
    }

    pub fn header(&mut self, w: &mut dyn Write) -> std::io::Result<()> {
        let head: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
        Table::line(w, &head)
    }

    pub fn row(&mut self, w: &mut dyn Write, rec: &DecisionRecord) -> std::io::Result<()> {
        self.decisions += 1;
        match rec.disposition {
            Disposition::Allowed => self.allowed += 1,
            Disposition::Blocked => self.blocked += 1,
            Disposition::Detected => self.detected += 1,
        }
        let t = rec.traffic.unwrap_or_default();
        let row = [
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
        ];
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        Table::line(w, &cells)
    }

    pub fn footer(&self, w: &mut dyn Write, r: &ReplaySummary) -> std::io::Result<()> {
        writeln!(w)?;
        writeln!(
            w,
            "{} decisions: {} allowed, {} blocked, {} detected (log-only or watch); {} packets{}{}",
            self.decisions,
            self.allowed,
            self.blocked,
            self.detected,
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
}
