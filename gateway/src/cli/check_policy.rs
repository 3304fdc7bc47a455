//! `bulkhead check-policy POLICY.toml`: validate a policy, compile it, print a summary.
//!
//! Exit status: 0 when the policy is valid (warnings are printed but do not fail), 2 with every
//! error otherwise. With `--json`, standard output carries one JSON object in both cases:
//! the summary (`"valid": true`), or `"valid": false` with `errors` and `warnings` as objects
//! (`file`, `line`, `column`, `severity`, `message`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use policy_engine::{compile, Diagnostic, LoadError, Mode, Severity};

use crate::input::echo_path;
use crate::runtime::policy::load_policy_file;

/// Arguments of `bulkhead check-policy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (TOML).
    #[arg(value_name = "POLICY.toml")]
    pub policy: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Exit status for an invalid policy.
pub const EXIT_INVALID: u8 = 2;

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match load_policy_file(&args.policy) {
        Ok(loaded) => loaded,
        Err(err) => {
            if args.json {
                println!("{}", invalid_json(&args.policy, &err));
            } else {
                report_invalid(&args.policy, &err);
            }
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let started = Instant::now();
    let compiled = compile(&loaded.policy, 0);
    let compile_time = started.elapsed();
    let stats = compiled.stats();
    let policy = &loaded.policy;
    let watch = policy.rules.iter().filter(|r| r.watch).count();
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    if args.json {
        let summary = serde_json::json!({
            "policy": args.policy.to_string_lossy(),
            "files": loaded.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "valid": true,
            "mode": policy.mode.as_str(),
            "sni_dns_check": policy.sni_dns_check.as_str(),
            "default_action": policy.default_action.action().as_str(),
            "smartgroups": stats.smartgroups,
            "webgroups": stats.webgroups,
            "addressgroups": stats.addressgroups,
            "rules": stats.rules,
            "watch_rules": watch,
            "patterns": stats.patterns,
            "cidrs": stats.cidrs,
            "compile_time_us": compile_time.as_micros() as u64,
            "compiled_bytes": stats.memory_bytes,
            "warnings": loaded.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        });
        println!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: valid", echo_path(&args.policy));
    if loaded.files.len() > 1 {
        let includes: Vec<String> = loaded.files[1..]
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        println!("  includes:      {}", includes.join(", "));
    }
    println!(
        "  mode:          {}{}",
        policy.mode,
        if policy.mode == Mode::LogOnly {
            " (verdicts are logged, everything is forwarded)"
        } else {
            ""
        }
    );
    println!(
        "  sni_dns_check: {}{}",
        policy.sni_dns_check,
        match policy.sni_dns_check {
            policy_engine::SniDnsCheck::Enforce =>
                " (a flow permitted by name must go to an address the name resolves to)",
            policy_engine::SniDnsCheck::Log =>
                " (addresses a permitted name does not resolve to are logged as Detected)",
            policy_engine::SniDnsCheck::Off => " (names are not checked against DNS)",
        }
    );
    println!("  default:       {}", policy.default_action.action());
    println!(
        "  groups:        {} smartgroups, {} webgroups, {} addressgroups",
        stats.smartgroups, stats.webgroups, stats.addressgroups
    );
    println!("  rules:         {} ({watch} watch)", stats.rules);
    println!("  patterns:      {}", stats.patterns);
    println!("  CIDRs:         {}", stats.cidrs);
    println!(
        "  compiled:      {:.3} ms, {} in memory ({} address intervals, {} name trie nodes, {} port classes)",
        compile_time.as_secs_f64() * 1e3,
        human_bytes(stats.memory_bytes),
        stats.address_intervals,
        stats.name_nodes,
        stats.port_classes
    );
    println!("  warnings:      {}", loaded.warnings.len());
    Ok(ExitCode::SUCCESS)
}

/// Every error and warning on standard error, then a count.
pub(crate) fn report_invalid(policy: &std::path::Path, err: &LoadError) {
    for e in &err.errors {
        eprintln!("{e}");
    }
    for w in &err.warnings {
        eprintln!("{w}");
    }
    let n = err.errors.len();
    eprintln!(
        "{}: invalid policy: {n} error{}",
        echo_path(policy),
        if n == 1 { "" } else { "s" }
    );
}

/// The `--json` form of a policy that does not load.
pub(crate) fn invalid_json(policy: &std::path::Path, err: &LoadError) -> serde_json::Value {
    serde_json::json!({
        "policy": policy.to_string_lossy(),
        "valid": false,
        "errors": err.errors.iter().map(diagnostic_json).collect::<Vec<_>>(),
        "warnings": err.warnings.iter().map(diagnostic_json).collect::<Vec<_>>(),
    })
}

/// One diagnostic as a JSON object.
pub(crate) fn diagnostic_json(d: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "file": d.file.to_string_lossy(),
        "line": d.line,
        "column": d.column,
        "severity": match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        "message": d.message,
    })
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}
