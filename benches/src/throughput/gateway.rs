//! `bulkhead run` in the lab's gateway namespace with a given policy, through
//! [`bulkhead_lab::gateway::GatewayProcess`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bulkhead_lab::gateway::{GatewayProcess, GatewaySpec};
use bulkhead_lab::Lab;

/// A running gateway. Dropping it stops it.
#[derive(Debug)]
pub struct Gateway {
    process: GatewayProcess,
    /// Records already in the decision log when this gateway started (an earlier gateway of the
    /// same lab wrote them): not counted for this one.
    earlier_records: usize,
}

impl Gateway {
    /// Starts `bulkhead run` with `policy`, the TUN queues and busy polling of `opts`, and
    /// returns once it is ready (its `/readyz` answers and the TUN device is up).
    pub fn start(
        lab: &Lab,
        binary: &Path,
        policy: &str,
        opts: &super::Options,
        fast_path: Option<bool>,
    ) -> anyhow::Result<Gateway> {
        let mut spec = GatewaySpec::new(binary, policy);
        spec.fast_path = fast_path;
        spec.id = "throughput".to_owned();
        spec.queues = opts.queues.max(1);
        spec.busy_poll_us = opts.busy_poll_us;
        spec.ready_timeout = Duration::from_secs(30);
        let process = GatewayProcess::start(lab, &spec).context("starting bulkhead run")?;
        let earlier_records = process.records().map_or(0, |r| r.len());
        Ok(Gateway {
            process,
            earlier_records,
        })
    }

    /// Stops the gateway and says how it went: resident memory at the end of the measurements,
    /// flows handed to the kernel, decision records written, exit status.
    pub fn stop(mut self) -> anyhow::Result<String> {
        let rss = self.process.rss_kib();
        let fast = self.process.metrics().ok().map(|m| {
            let v = |name| bulkhead_lab::gateway::metric_value(&m, name, &[]).unwrap_or(0.0);
            let n = v("bulkhead_fastpath_handed_off_total");
            let cost = if n > 0.0 {
                format!(
                    " ({:.0} us each on the hand-off thread)",
                    v("bulkhead_fastpath_handoff_seconds_total") / n * 1e6
                )
            } else {
                String::new()
            };
            let on = v("bulkhead_fastpath_supported") >= 1.0;
            format!(
                "fast path {}: {n} flows handed off{cost}",
                if on { "on" } else { "off" }
            )
        });
        let status = self
            .process
            .stop(Duration::from_secs(10))
            .context("stopping bulkhead run")?;
        // Read after the stop: the gateway writes the flow-end records of open flows on exit.
        let records = self
            .process
            .records()
            .map(|r| summarize_records(r.get(self.earlier_records..).unwrap_or(&[])));
        let rss = rss.map_or_else(
            || "unknown".to_owned(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0),
        );
        let records = records.unwrap_or_else(|e| format!("decision log unreadable ({e})"));
        let fast = fast.unwrap_or_else(|| "fast path: metrics unreadable".to_owned());
        Ok(format!(
            "gateway resident memory {rss} at the end, {status}; {fast}; {records}"
        ))
    }
}

/// "N decision records (by activity / rule / reason: A, B, ...)", the four most frequent kinds.
fn summarize_records(records: &[serde_json::Value]) -> String {
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for r in records {
        let activity = match r["activity_id"].as_u64() {
            Some(1) => "open",
            Some(2) => "close",
            Some(5) => "refuse",
            _ => "other",
        };
        let rule = r["policy"]["name"].as_str().unwrap_or("?");
        let reason = r["reason"].as_str().unwrap_or("?");
        *kinds
            .entry(format!("{activity}/{rule}/{reason}"))
            .or_default() += 1;
    }
    let mut by_count: Vec<(String, usize)> = kinds.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top: Vec<String> = by_count
        .iter()
        .take(4)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    format!(
        "{} decision records (activity/rule/reason: {})",
        records.len(),
        if top.is_empty() {
            "none".to_owned()
        } else {
            top.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_records_by_kind() {
        let rec = |a: u64, rule: &str, reason: &str| serde_json::json!({"activity_id": a, "policy": {"name": rule}, "reason": reason});
        let records = vec![
            rec(1, "default", "default"),
            rec(2, "default", "default"),
            rec(1, "default", "default"),
            rec(5, "block-c2", "rule"),
        ];
        assert_eq!(
            summarize_records(&records),
            "4 decision records (activity/rule/reason: 2 open/default/default, \
             1 close/default/default, 1 refuse/block-c2/rule)"
        );
        assert_eq!(
            summarize_records(&[]),
            "0 decision records (activity/rule/reason: none)"
        );
    }
}
