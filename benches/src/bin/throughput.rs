//! `throughput`: measures kernel forwarding, the gateway permitting everything and the gateway
//! with a 10,000-rule policy on one network-namespace topology, and prints a markdown table.
//! Needs root, iproute2 and iperf3; see `docs/performance.md`.
//!
//! ```text
//! cargo build --release -p bulkhead-gateway -p bulkhead-benches
//! sudo target/release/throughput [--seconds N] [--tls-seconds N] [--round-trips N] [--rules N]
//!     [--queues N] [--busy-poll-us N] [--runs N] [--setups LIST] [--bulkhead PATH] [--out FILE]
//! (--runs N repeats the whole measurement N times and adds a summary: the median over the runs
//! of each run's own ratio to kernel forwarding; --setups kernel,gateway,gateway-no-fast-path
//! measures only those: kernel, passthrough, gateway, gateway-no-fast-path, gateway-10k)
//! target/release/throughput [--rules N] --write-policy FILE   # only write the generated policy
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use bulkhead_benches::throughput::report::Setup;
use bulkhead_benches::throughput::{self, Interrupt, Options};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut opts = Options::default();
    let mut out: Option<PathBuf> = None;
    let mut runs: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => opts.iperf_seconds = value("--seconds")?.parse()?,
            "--tls-seconds" => opts.tls_seconds = value("--tls-seconds")?.parse()?,
            "--round-trips" => opts.round_trips = value("--round-trips")?.parse()?,
            "--rules" => opts.rules = value("--rules")?.parse()?,
            "--queues" => opts.queues = value("--queues")?.parse()?,
            "--runs" => runs = value("--runs")?.parse()?,
            "--busy-poll-us" => opts.busy_poll_us = Some(value("--busy-poll-us")?.parse()?),
            "--bulkhead" => opts.bulkhead = Some(PathBuf::from(value("--bulkhead")?)),
            "--setups" => {
                let list = value("--setups")?;
                opts.setups = list
                    .split(',')
                    .map(|k| {
                        Setup::from_key(k.trim()).with_context(|| {
                            format!(
                                "unknown set-up {k:?} (one of: {})",
                                Setup::ALL.map(|s| s.key()).join(", ")
                            )
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--write-policy" => {
                // Write the generated policy (for `bulkhead check-policy` / `explain`) and stop.
                let path = PathBuf::from(value("--write-policy")?);
                let (text, _) = throughput::generated_policy(&opts);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(());
            }
            "-h" | "--help" => {
                println!(
                    "usage: throughput [--seconds N] [--tls-seconds N] [--round-trips N] \
                     [--rules N] [--queues N] [--busy-poll-us N] [--runs N] [--setups LIST] [--bulkhead PATH] \
                     [--out FILE] [--write-policy FILE]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !(1..=60).contains(&opts.iperf_seconds) || !(1..=60).contains(&opts.tls_seconds) {
        bail!("--seconds and --tls-seconds must be between 1 and 60");
    }
    let interrupt = Interrupt::new();
    interrupt.install_signal_handlers()?;
    if !(1..=20).contains(&runs) {
        bail!("--runs must be between 1 and 20");
    }
    let mut reports = Vec::new();
    let mut text = String::new();
    for i in 0..runs {
        if runs > 1 {
            eprintln!("throughput: run {} of {runs}", i + 1);
            text.push_str(&format!("Run {} of {runs}:\n\n", i + 1));
        }
        let report = throughput::run(&opts, &interrupt)?;
        text.push_str(&report.to_markdown());
        text.push('\n');
        reports.push(report);
    }
    if runs > 1 {
        text.push_str(&format!(
            "Summary: each gateway figure compared with the kernel forwarding of its own run\n\n{}\n",
            throughput::report::summarize(&reports)
        ));
    }
    let text = format!("{text}{}", throughput::machine_facts());
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
