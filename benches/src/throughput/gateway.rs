//! `bulkhead run` in the lab's gateway namespace with a given policy, through
//! [`bulkhead_gateway::netlab::gateway::GatewayProcess`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bulkhead_gateway::netlab::gateway::{GatewayProcess, GatewaySpec};
use bulkhead_gateway::netlab::Lab;

/// A running gateway. Dropping it stops it.
#[derive(Debug)]
pub struct Gateway {
    process: GatewayProcess,
}

impl Gateway {
    /// Starts `bulkhead run` with `policy` and `queues` TUN queues, and returns once it is
    /// ready (its `/readyz` answers and the TUN device is up).
    pub fn start(lab: &Lab, binary: &Path, policy: &str, queues: u16) -> anyhow::Result<Gateway> {
        let mut spec = GatewaySpec::new(binary, policy);
        spec.id = "throughput".to_owned();
        spec.queues = queues.max(1);
        spec.ready_timeout = Duration::from_secs(30);
        let process = GatewayProcess::start(lab, &spec).context("starting bulkhead run")?;
        Ok(Gateway { process })
    }

    /// Stops the gateway and says how it went: resident memory at the end of the measurements,
    /// decision records written, exit status.
    pub fn stop(mut self) -> anyhow::Result<String> {
        let rss = self.process.rss_kib();
        let records = self.process.records().map(|r| r.len());
        let status = self
            .process
            .stop(Duration::from_secs(10))
            .context("stopping bulkhead run")?;
        let rss = rss.map_or_else(
            || "unknown".to_owned(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0),
        );
        let records = records.map_or_else(|e| format!("unreadable ({e})"), |n| n.to_string());
        Ok(format!(
            "gateway resident memory {rss} at the end, {records} decision records, exit {status}"
        ))
    }
}
