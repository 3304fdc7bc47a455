//! Decision records sent back by gateways, and the fleet report built from them.
//!
//! Records travel as the JSON objects of the decision log (docs/log-schema.md), exactly as the
//! gateway writes them: the log schema stays the one contract, and the controller keeps each
//! record verbatim for later views. For the report, each record is digested once on arrival into
//! a [`RecordRow`] (who, to where, decision or flow end, bytes), so aggregation is a single
//! `GROUP BY` in the store. Parsing is tolerant of fields it does not need and strict about size:
//! a record that is too large or not a decision record is refused and counted, never stored.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::store::{RecordRow, ReportRow};

/// Largest decision record accepted (a real one is well under 2 KiB).
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 10_000;

#[derive(Debug, Deserialize)]
struct Endpoint {
    ip: String,
    #[serde(default)]
    hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Named {
    #[serde(alias = "host")]
    sni: String,
}

#[derive(Debug, Default, Deserialize)]
struct Traffic {
    #[serde(default)]
    bytes_in: u64,
    #[serde(default)]
    bytes_out: u64,
}

#[derive(Debug, Deserialize)]
struct WireRecord {
    time: u64,
    activity_id: u8,
    disposition: String,
    src_endpoint: Endpoint,
    dst_endpoint: Endpoint,
    #[serde(default)]
    tls: Option<Named>,
    #[serde(default)]
    http: Option<Named>,
    #[serde(default)]
    src_groups: Vec<String>,
    #[serde(default)]
    dst_groups: Vec<String>,
    #[serde(default)]
    traffic: Option<Traffic>,
}

/// Digests one record, or says why it is refused.
pub fn digest_record(json: &str) -> Result<RecordRow, String> {
    if json.len() > MAX_RECORD_BYTES {
        return Err(format!("record larger than {MAX_RECORD_BYTES} bytes"));
    }
    let record: WireRecord =
        serde_json::from_str(json).map_err(|e| format!("not a decision record: {e}"))?;
    let disposition = match record.disposition.as_str() {
        "Allowed" => "allowed",
        "Blocked" => "denied",
        "Detected" => "detected",
        other => return Err(format!("unknown disposition `{other}`")),
    };
    // activity 2 is a flow end; 1 (open) and 5 (refuse) are decisions.
    let is_decision = match record.activity_id {
        1 | 5 => true,
        2 => false,
        other => return Err(format!("unknown activity_id {other}")),
    };
    let src_group = record.src_groups.first().cloned().unwrap_or_default();
    let dst_group = record.dst_groups.first().cloned().unwrap_or_default();
    let name = record
        .tls
        .map(|t| t.sni)
        .or(record.http.map(|h| h.sni))
        .or(record.dst_endpoint.hostname)
        .unwrap_or(record.dst_endpoint.ip);
    let traffic = record.traffic.unwrap_or_default();
    Ok(RecordRow {
        time_ms: record.time,
        src_ip: if src_group.is_empty() {
            record.src_endpoint.ip
        } else {
            String::new()
        },
        src_group,
        dst_name: if dst_group.is_empty() {
            name
        } else {
            String::new()
        },
        dst_group,
        is_decision,
        disposition: disposition.to_string(),
        bytes_in: traffic.bytes_in,
        bytes_out: traffic.bytes_out,
        json: json.to_string(),
    })
}

/// The fields of a stored record that describe its flow, for `recommend` and `diff`.
#[derive(Debug, Deserialize)]
struct FlowRecord {
    activity_id: u8,
    #[serde(default)]
    disposition: String,
    src_endpoint: FlowEndpoint,
    dst_endpoint: FlowEndpoint,
    connection_info: FlowConnection,
    #[serde(default)]
    tls: Option<Named>,
    #[serde(default)]
    http: Option<Named>,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct FlowEndpoint {
    ip: std::net::IpAddr,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FlowConnection {
    protocol_num: u8,
}

/// A stored record read as a flow: the flow, and whether the gateway enforced a denial on it
/// (disposition `Blocked`). `None` for records that are no policy decision of their own (flow
/// ends; decisions of a bound or an evasion defence, the same under any policy; cuts after a
/// policy swap, whose flow has its own decision record) and for records that cannot be read.
pub fn flow_of(json: &str) -> Option<(policy_engine::least::flows::Flow, bool)> {
    let r: FlowRecord = serde_json::from_str(json).ok()?;
    if !matches!(r.activity_id, 1 | 5) {
        return None;
    }
    if policy_engine::least::flows::NOT_A_POLICY_DECISION.contains(&r.reason.as_str()) {
        return None;
    }
    let raw = r
        .tls
        .map(|t| t.sni)
        .or(r.http.map(|h| h.sni))
        .or(r.dst_endpoint.hostname);
    Some((
        policy_engine::least::flows::Flow::from_record(
            r.src_endpoint.ip,
            r.dst_endpoint.ip,
            r.connection_info.protocol_num,
            r.dst_endpoint.port,
            raw.as_deref(),
        ),
        r.disposition == "Blocked",
    ))
}

/// The WebGroups of the curated AI-provider catalog (configs/webgroups/ai-providers.toml),
/// compiled in so the report can put AI destinations first without reading files at run time.
pub fn ai_groups() -> &'static BTreeSet<String> {
    static GROUPS: OnceLock<BTreeSet<String>> = OnceLock::new();
    GROUPS.get_or_init(|| {
        let text = include_str!("../../configs/webgroups/ai-providers.toml");
        text.parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("webgroups").and_then(|w| w.as_table()).cloned())
            .map(|groups| groups.keys().cloned().collect())
            .unwrap_or_default()
    })
}

/// Orders report rows: AI-provider destinations first, then by flows (most first), then by
/// source and destination for a stable order.
pub fn sort_report(rows: &mut [ReportRow]) {
    let ai = ai_groups();
    rows.sort_by(|a, b| {
        let a_ai = !ai.contains(&a.dst_group);
        let b_ai = !ai.contains(&b.dst_group);
        a_ai.cmp(&b_ai)
            .then(b.flows.cmp(&a.flows))
            .then_with(|| (&a.src_group, &a.src_ip).cmp(&(&b.src_group, &b.src_ip)))
            .then_with(|| (&a.dst_group, &a.dst_name).cmp(&(&b.dst_group, &b.dst_name)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_names_the_providers() {
        assert!(ai_groups().contains("openai"));
        assert!(ai_groups().contains("anthropic"));
    }

    #[test]
    fn records_are_digested_and_garbage_refused() {
        let open = r#"{"time":5,"activity_id":1,"disposition":"Blocked",
            "src_endpoint":{"ip":"10.0.0.1","port":1},"dst_endpoint":{"ip":"1.2.3.4","port":443},
            "tls":{"sni":"example.com"},"src_groups":[],"dst_groups":[],"extra":1}"#;
        let row = digest_record(open).unwrap();
        assert_eq!(row.src_ip, "10.0.0.1");
        assert_eq!(row.dst_name, "example.com");
        assert_eq!(row.disposition, "denied");
        assert!(row.is_decision);
        for bad in [
            "",
            "not json",
            "{}",
            &open.replace("Blocked", "Maybe"),
            &open.replace("\"activity_id\":1", "\"activity_id\":9"),
            &" ".repeat(MAX_RECORD_BYTES + 1),
        ] {
            assert!(digest_record(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ai_rows_come_first() {
        let mut rows = vec![
            ReportRow {
                dst_group: "other".into(),
                flows: 100,
                ..Default::default()
            },
            ReportRow {
                dst_group: "openai".into(),
                flows: 1,
                ..Default::default()
            },
        ];
        sort_report(&mut rows);
        assert_eq!(rows[0].dst_group, "openai");
    }
}
