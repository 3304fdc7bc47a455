//! End-to-end: busy polling spins only while traffic is recent. With a long busy-polling window,
//! traffic still passes, and once it stops the gateway goes back to sleep: an idle gateway uses
//! next to no CPU. Root only.

use std::time::Duration;

use anyhow::{Context as _, Result};
use bulkhead_lab::clients::{self, Outcome, Request};
use bulkhead_lab::gateway::GatewaySpec;
use bulkhead_tests::e2e::*;

const RULES: &str = r#"
[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so fields 14 and 15 are at 11 and 12.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn ticks_per_second() -> u64 {
    let t = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok());
    t.unwrap_or(100)
}

#[test]
fn busy_polling_stops_when_traffic_stops() -> Result<()> {
    if !root_or_skip("busy_polling_stops_when_traffic_stops") {
        return Ok(());
    }
    let tb = testbed();
    let mut spec = GatewaySpec::new(bulkhead_bin(), &policy("enforce", RULES));
    // The longest window the configuration allows: a worker that never stopped spinning would
    // stand out all the more.
    spec.busy_poll_us = Some(10_000);
    let gw = start_gateway_with(&tb, spec);
    let prod = tb.lab.workload("prod").netns.clone();

    for _ in 0..5 {
        let ex = clients::fetch(
            &prod,
            Request::https(
                &tb.client_tls,
                server_v4(443),
                "api.openai.com",
                "/bytes/20000",
            )
            .timeout(Duration::from_secs(5)),
        )?;
        assert_eq!(ex.outcome, Outcome::Completed, "{ex:?}");
        assert!(ex.body_intact, "{ex:?}");
    }

    // Past the window (and past the flows' closing), the workers must sleep in poll.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(gw.pid())?;
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(gw.pid())? - before;
    let hz = ticks_per_second();
    // 2 s of idleness: a spinning worker would burn about 2 s of CPU; a sleeping gateway wakes
    // only for its idle tick and timers. Allow a tenth of a CPU for a loaded machine.
    assert!(
        used * 10 < 2 * hz,
        "the idle gateway used {used} ticks of CPU ({hz} per second) in 2 s: busy polling did \
         not stop"
    );
    Ok(())
}
