//! `bulkhead diff --policy OLD --candidate NEW [--records FILE.jsonl]... [CAPTURE...] [--json]`:
//! the shadow-policy test before enforcing. The flows of decision records (the live log, a
//! replay's output, records exported from the controller) and of packet captures are evaluated
//! under both policies; the verdicts that would change are printed grouped by SmartGroup and
//! destination, with counts and examples.
//!
//! Records are read line by line (at most [`MAX_LINE_BYTES`] each) and captures are replayed
//! through the pipeline as `bulkhead replay` does (its [`replay_to`] entry point), so memory
//! stays bounded whatever the size of the input: what is kept is the diff's bounded buckets.
//! For captures the pipeline runs under a probe policy built from both (see
//! `policy_engine::least::flows::name_probe`), so that every flow carries the name the gateway
//! would read under either policy.
//!
//! Exit status: 0 when no flow would be newly denied, 1 when some would, 2 for usage errors,
//! a policy that does not load, or input that cannot be read (a malformed record, a damaged
//! capture): an answer from part of the input is not an answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use policy_engine::compile;
use policy_engine::least::flows::{name_probe, Bucket, Change, Flow, FlowDiff, Totals};
use serde::Deserialize;

use super::replay::{replay_to, ReplayOptions};
use crate::input::{echo_bounded, echo_path, open_regular};
use crate::record::{DecisionRecord, Reason};
use crate::runtime::policy::load_policy_file;

/// Longest record line accepted (a real record is well under 2 KiB; the controller refuses
/// records over 16 KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Exit status when some flow would be newly denied.
pub const EXIT_NEWLY_DENIED: u8 = 1;
/// Exit status for usage and input errors.
pub const EXIT_INPUT: u8 = 2;

/// Arguments of `bulkhead diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy in force today.
    #[arg(long, value_name = "OLD.toml")]
    pub policy: PathBuf,
    /// The policy to test.
    #[arg(long, value_name = "NEW.toml")]
    pub candidate: PathBuf,
    /// Decision records, JSON lines in the decision-log schema (repeatable).
    #[arg(long = "records", value_name = "FILE.jsonl")]
    pub records: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// pcap or pcapng files, replayed through the pipeline.
    #[arg(value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

/// The fields of a decision record that describe its flow; everything else is ignored, so
/// records of older and newer versions are read alike.
#[derive(Debug, Deserialize)]
struct RecordFlow {
    #[serde(default)]
    activity_id: u8,
    src_endpoint: Endpoint,
    dst_endpoint: DstEndpoint,
    connection_info: Connection,
    #[serde(default)]
    tls: Option<Sni>,
    #[serde(default)]
    http: Option<Host>,
    #[serde(default)]
    reason: Option<Reason>,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    ip: IpAddr,
}

#[derive(Debug, Deserialize)]
struct DstEndpoint {
    ip: IpAddr,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Connection {
    protocol_num: u8,
}

#[derive(Debug, Deserialize)]
struct Sni {
    sni: String,
}

#[derive(Debug, Deserialize)]
struct Host {
    host: String,
}

/// Records that do not describe a policy decision of their own: the reasons of
/// [`policy_engine::least::flows::NOT_A_POLICY_DECISION`], matched on the enum (a test holds
/// the two to each other).
fn not_a_policy_decision(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::InspectTimeout
            | Reason::InspectOverflow
            | Reason::MemoryPressure
            | Reason::FlowLimit
            | Reason::Midstream
            | Reason::AmbiguousOverlap
            | Reason::PolicyUpdate
            | Reason::FragmentedHeader
            | Reason::BadChecksum
    )
}

/// The flow of one record line; `Ok(None)` for a record that is not a decision (a flow end)
/// or not a policy decision.
pub fn flow_of_line(line: &str) -> Result<Option<Flow>, String> {
    let r: RecordFlow =
        serde_json::from_str(line).map_err(|e| format!("not a decision record: {e}"))?;
    match r.activity_id {
        1 | 5 => {}
        2 => return Ok(None),
        other => return Err(format!("unknown activity_id {other}")),
    }
    if r.reason.is_some_and(not_a_policy_decision) {
        return Ok(None);
    }
    let raw = r
        .tls
        .as_ref()
        .map(|t| t.sni.as_str())
        .or(r.http.as_ref().map(|h| h.host.as_str()))
        .or(r.dst_endpoint.hostname.as_deref());
    Ok(Some(Flow::from_record(
        r.src_endpoint.ip,
        r.dst_endpoint.ip,
        r.connection_info.protocol_num,
        r.dst_endpoint.port,
        raw,
    )))
}

fn flow_of_record(r: &DecisionRecord) -> Option<Flow> {
    if r.is_flow_end() || not_a_policy_decision(r.reason) {
        return None;
    }
    Some(Flow::from_record(
        r.src_endpoint.ip,
        r.dst_endpoint.ip,
        r.connection_info.protocol_num,
        r.dst_endpoint.port,
        r.name().or(r.dst_endpoint.hostname.as_deref()),
    ))
}

/// Reads one records file into `add`, line by line; `Err` names the file and line.
pub fn read_records(
    path: &Path,
    add: &mut dyn FnMut(Flow),
    skipped: &mut u64,
) -> Result<(), String> {
    let file = open_regular(path).map_err(|e| format!("{}: {e}", echo_path(path)))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        line_no += 1;
        let n = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{}:{line_no}: {e}", echo_path(path)))?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(format!(
                "{}:{line_no}: a line longer than {MAX_LINE_BYTES} bytes is not a decision record",
                echo_path(path)
            ));
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|_| format!("{}:{line_no}: not UTF-8", echo_path(path)))?
            .trim();
        if text.is_empty() {
            continue;
        }
        match flow_of_line(text) {
            Ok(Some(flow)) => add(flow),
            Ok(None) => *skipped += 1,
            Err(e) => {
                return Err(format!(
                    "{}:{line_no}: {}",
                    echo_path(path),
                    echo_bounded(&e, 200)
                ))
            }
        }
    }
}

/// Runs `bulkhead diff`.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    if args.records.is_empty() && args.captures.is_empty() {
        eprintln!(
            "bulkhead: error: give decision records (--records FILE.jsonl) or captures to diff on"
        );
        return Ok(ExitCode::from(EXIT_INPUT));
    }
    let mut loaded = Vec::new();
    for path in [&args.policy, &args.candidate] {
        match load_policy_file(path) {
            Ok(l) => loaded.push(l),
            Err(err) => {
                super::check_policy::report_invalid(path, &err);
                return Ok(ExitCode::from(EXIT_INPUT));
            }
        }
    }
    let (old, new) = (&loaded[0].policy, &loaded[1].policy);
    let old_c = compile(old, 1);
    let new_c = compile(new, 2);
    let mut diff = FlowDiff::new(&old_c, &new_c);
    let mut skipped = 0u64;
    let mut errors: Vec<String> = Vec::new();
    for path in &args.records {
        if let Err(e) = read_records(path, &mut |f| diff.add(&f), &mut skipped) {
            errors.push(e);
        }
    }
    if !args.captures.is_empty() && errors.is_empty() {
        let probe = compile(&name_probe(old, new), 3);
        let opts = ReplayOptions {
            gateway_id: "diff".to_owned(),
            verify_checksums: false,
            ..ReplayOptions::default()
        };
        let summary = replay_to(probe, &args.captures, &opts, &mut |rec| {
            match flow_of_record(&rec) {
                Some(f) => diff.add(&f),
                None => skipped += 1,
            }
            Ok(())
        })?;
        errors.extend(summary.errors.iter().map(|e| format!("capture {e}")));
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("bulkhead: error: {e}");
        }
        eprintln!("bulkhead: error: the input could not be read completely; no verdict changes are reported");
        return Ok(ExitCode::from(EXIT_INPUT));
    }
    let (totals, buckets) = diff.finish();
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let v = serde_json::json!({
            "flows": totals.flows,
            "unchanged": totals.unchanged,
            "newly_denied": totals.newly_denied,
            "newly_permitted": totals.newly_permitted,
            "rule_changed": totals.rule_changed,
            "skipped": skipped,
            "changes": buckets,
        });
        writeln!(w, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        print_table(&mut w, &totals, &buckets, skipped)?;
    }
    w.flush()?;
    Ok(if totals.newly_denied > 0 {
        ExitCode::from(EXIT_NEWLY_DENIED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The human form: one section per kind of change, then the totals.
pub fn print_table(
    w: &mut dyn Write,
    totals: &Totals,
    buckets: &[Bucket],
    skipped: u64,
) -> std::io::Result<()> {
    for (change, title) in [
        (
            Change::NewlyDenied,
            "NEWLY DENIED: forwarded today, stopped by the candidate",
        ),
        (
            Change::NewlyPermitted,
            "NEWLY PERMITTED: stopped today, forwarded by the candidate",
        ),
        (
            Change::RuleChanged,
            "DECIDED BY ANOTHER RULE: same outcome, another rule or action",
        ),
    ] {
        let rows: Vec<[String; 6]> = buckets
            .iter()
            .filter(|b| b.change == change)
            .map(|b| {
                [
                    echo_bounded(&b.src_group, 64),
                    echo_bounded(&b.dst, 80),
                    b.flows.to_string(),
                    format!("{} ({})", b.old.action, echo_bounded(&b.old.rule, 64)),
                    format!("{} ({})", b.new.action, echo_bounded(&b.new.rule, 64)),
                    echo_bounded(b.examples.first().map_or("", String::as_str), 120),
                ]
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        writeln!(w, "{title}")?;
        let head = [
            "SOURCE",
            "DESTINATION",
            "FLOWS",
            "TODAY",
            "CANDIDATE",
            "EXAMPLE",
        ];
        let mut widths = head.map(str::len);
        for row in &rows {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |w: &mut dyn Write, cells: [&str; 6]| -> std::io::Result<()> {
            let mut s = String::from("  ");
            for (i, c) in cells.iter().enumerate() {
                s.push_str(&format!("{c:<width$}  ", width = widths[i]));
            }
            writeln!(w, "{}", s.trim_end())
        };
        line(w, head)?;
        for r in &rows {
            line(w, [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]])?;
        }
        writeln!(w)?;
    }
    writeln!(
        w,
        "{} flows: {} newly denied, {} newly permitted, {} decided by another rule, {} unchanged ({} records skipped: flow ends and decisions made by a bound, not a rule)",
        totals.flows,
        totals.newly_denied,
        totals.newly_permitted,
        totals.rule_changed,
        totals.unchanged,
        skipped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reasons_left_out_are_the_policy_engines() {
        let here: Vec<String> = Reason::KNOWN
            .into_iter()
            .filter(|r| not_a_policy_decision(*r))
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            here,
            policy_engine::least::flows::NOT_A_POLICY_DECISION.map(str::to_owned)
        );
    }
}
