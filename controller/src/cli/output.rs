//! What the operator subcommands print: aligned tables for people, one JSON document (the shapes
//! of the design's "Control plane" section) for scripts.

use control_proto::v1::{
    DiffReply, HistoryReply, PushReply, RecommendReply, ReportReply, StatusReply,
};
use serde_json::{json, Value};

use crate::config::rfc3339;

fn time_or_null(ms: u64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        Value::String(rfc3339(ms))
    }
}

fn non_empty(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_string())
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string())
    );
}

/// Prints rows as columns separated by two spaces, each as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(super) fn status(reply: &StatusReply, json: bool) {
    if json {
        let gateways: Vec<Value> = reply
            .gateways
            .iter()
            .map(|g| {
                json!({
                    "id": g.id,
                    "address": g.address,
                    "connected": g.connected,
                    "build_version": g.build_version,
                    "enforced_version": g.enforced_version,
                    "state": g.state,
                    "last_seen": time_or_null(g.last_seen_unix_ms),
                    "errors": g.errors,
                })
            })
            .collect();
        print_json(&json!({
            "version": reply.version,
            "gateways": gateways,
            "errors": reply.errors,
        }));
        return;
    }
    println!("version {}", reply.version);
    for error in &reply.errors {
        println!("not served: {error}");
    }
    let rows: Vec<Vec<String>> = reply
        .gateways
        .iter()
        .map(|g| {
            vec![
                g.id.clone(),
                g.address.clone(),
                if g.connected { "yes" } else { "no" }.to_string(),
                g.build_version.clone(),
                g.enforced_version.to_string(),
                g.state.clone(),
                if g.last_seen_unix_ms == 0 {
                    "-".to_string()
                } else {
                    rfc3339(g.last_seen_unix_ms)
                },
                g.errors.join("; "),
            ]
        })
        .collect();
    table(
        &[
            "GATEWAY",
            "ADDRESS",
            "CONNECTED",
            "BUILD",
            "ENFORCED",
            "STATE",
            "LAST SEEN",
            "ERRORS",
        ],
        &rows,
    );
}

/// Prints a push or rollback answer; returns the exit status.
pub(super) fn push(reply: &PushReply, json: bool) -> u8 {
    for warning in &reply.warnings {
        eprintln!("{warning}");
    }
    if !reply.errors.is_empty() {
        for error in &reply.errors {
            eprintln!("{error}");
        }
        eprintln!(
            "bulkheadctl: the policy is invalid ({} error(s)); nothing was served",
            reply.errors.len()
        );
        if json {
            print_json(&json!({ "version": null, "errors": reply.errors }));
        }
        return super::EXIT_ANSWERED_ERROR;
    }
    if json {
        print_json(&json!({ "version": reply.version, "digest": reply.digest }));
    } else {
        println!("{}", reply.version);
    }
    0
}

pub(super) fn history(reply: &HistoryReply, json: bool) {
    if json {
        let versions: Vec<Value> = reply
            .versions
            .iter()
            .map(|v| {
                json!({
                    "version": v.version,
                    "time": rfc3339(v.time_unix_ms),
                    "origin": v.origin,
                    "operator": v.operator,
                    "digest": v.digest,
                })
            })
            .collect();
        print_json(&json!({ "versions": versions }));
        return;
    }
    let rows: Vec<Vec<String>> = reply
        .versions
        .iter()
        .map(|v| {
            let origin = if v.rollback_of > 0 {
                format!("{} of {}", v.origin, v.rollback_of)
            } else {
                v.origin.clone()
            };
            vec![
                v.version.to_string(),
                rfc3339(v.time_unix_ms),
                origin,
                v.operator.clone(),
                v.digest.clone(),
            ]
        })
        .collect();
    table(&["VERSION", "TIME", "ORIGIN", "OPERATOR", "DIGEST"], &rows);
}

pub(super) fn report(reply: &ReportReply, json: bool) {
    if json {
        let rows: Vec<Value> = reply
            .rows
            .iter()
            .map(|r| {
                json!({
                    "src_group": non_empty(&r.src_group),
                    "src_ip": non_empty(&r.src_ip),
                    "dst_group": non_empty(&r.dst_group),
                    "dst_name": non_empty(&r.dst_name),
                    "flows": r.flows,
                    "bytes_out": r.bytes_out,
                    "bytes_in": r.bytes_in,
                    "allowed": r.allowed,
                    "denied": r.denied,
                    "detected": r.detected,
                })
            })
            .collect();
        print_json(&json!({
            "since": rfc3339(reply.since_unix_ms),
            "until": rfc3339(reply.until_unix_ms),
            "rows": rows,
        }));
        return;
    }
    println!(
        "decision records from {} to {}",
        rfc3339(reply.since_unix_ms),
        rfc3339(reply.until_unix_ms)
    );
    let rows: Vec<Vec<String>> = reply
        .rows
        .iter()
        .map(|r| {
            let src = if r.src_group.is_empty() {
                &r.src_ip
            } else {
                &r.src_group
            };
            let dst = if r.dst_group.is_empty() {
                &r.dst_name
            } else {
                &r.dst_group
            };
            vec![
                src.clone(),
                dst.clone(),
                r.flows.to_string(),
                r.bytes_out.to_string(),
                r.bytes_in.to_string(),
                r.allowed.to_string(),
                r.denied.to_string(),
                r.detected.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SOURCE",
            "DESTINATION",
            "FLOWS",
            "BYTES OUT",
            "BYTES IN",
            "ALLOWED",
            "DENIED",
            "DETECTED",
        ],
        &rows,
    );
}

/// The recommended policy on standard output (ready to save as a file); the summary on
/// standard error, so that `> policy.toml` keeps only the policy.
pub(super) fn recommend(reply: &RecommendReply, json: bool) {
    if json {
        print_json(&json!({
            "policy": reply.policy,
            "summary": reply.summary,
            "based_on_version": reply.based_on_version,
            "since": rfc3339(reply.since_unix_ms),
            "until": rfc3339(reply.until_unix_ms),
            "records": reply.records,
            "flows": reply.flows,
        }));
        return;
    }
    print!("{}", reply.policy);
    eprintln!(
        "recommended from {} records ({} flows), {} to {}, starting from version {}",
        reply.records,
        reply.flows,
        rfc3339(reply.since_unix_ms),
        rfc3339(reply.until_unix_ms),
        reply.based_on_version
    );
    for line in &reply.summary {
        eprintln!("  {line}");
    }
}

pub(super) fn diff(reply: &DiffReply, json: bool) {
    if json {
        let changes: Vec<Value> = reply
            .policy_changes
            .iter()
            .map(
                |c| json!({"kind": c.kind, "name": c.name, "change": c.change, "detail": c.detail}),
            )
            .collect();
        let verdicts: Vec<Value> = reply
            .verdict_changes
            .iter()
            .map(|v| {
                json!({
                    "change": v.change,
                    "src_group": v.src_group,
                    "dst": v.dst,
                    "flows": v.flows,
                    "old": {"action": v.old_action, "rule": v.old_rule},
                    "new": {"action": v.new_action, "rule": v.new_rule},
                    "examples": v.examples,
                })
            })
            .collect();
        print_json(&json!({
            "from": reply.from_version,
            "to": reply.to_version,
            "since": time_or_null(reply.since_unix_ms),
            "until": rfc3339(reply.until_unix_ms),
            "policy_changes": changes,
            "verdict_changes": verdicts,
            "flows": reply.flows,
            "unchanged": reply.unchanged,
            "newly_denied": reply.newly_denied,
            "newly_permitted": reply.newly_permitted,
            "rule_changed": reply.rule_changed,
            "skipped": reply.skipped,
        }));
        return;
    }
    println!("version {} -> {}", reply.from_version, reply.to_version);
    if reply.policy_changes.is_empty() {
        println!("no rule or group changes");
    } else {
        let rows: Vec<Vec<String>> = reply
            .policy_changes
            .iter()
            .map(|c| {
                vec![
                    c.kind.clone(),
                    c.name.clone(),
                    c.change.clone(),
                    c.detail.clone(),
                ]
            })
            .collect();
        table(&["KIND", "NAME", "CHANGE", "DETAIL"], &rows);
    }
    println!();
    if !reply.verdict_changes.is_empty() {
        let rows: Vec<Vec<String>> = reply
            .verdict_changes
            .iter()
            .map(|v| {
                vec![
                    v.change.clone(),
                    v.src_group.clone(),
                    v.dst.clone(),
                    v.flows.to_string(),
                    format!("{} ({})", v.old_action, v.old_rule),
                    format!("{} ({})", v.new_action, v.new_rule),
                    v.examples.first().cloned().unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &[
                "CHANGE",
                "SOURCE",
                "DESTINATION",
                "FLOWS",
                "FROM",
                "TO",
                "EXAMPLE",
            ],
            &rows,
        );
        println!();
    }
    println!(
        "{} flows from the fleet's records: {} newly denied, {} newly permitted, {} decided by another rule, {} unchanged ({} records skipped)",
        reply.flows,
        reply.newly_denied,
        reply.newly_permitted,
        reply.rule_changed,
        reply.unchanged,
        reply.skipped
    );
}
