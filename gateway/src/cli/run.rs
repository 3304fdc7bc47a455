//! `bulkhead run --config gateway.toml`: the gateway daemon.
//!
//! Logs go to standard error through `tracing` (`RUST_LOG` or `--log-level` filter, `--log-format
//! json` for machine-readable lines); decision records go where `[log] decisions` says. Exit
//! status: 0 after SIGTERM or SIGINT, 1 on any failure (an invalid configuration or policy, a
//! TUN or routing error, a worker that stopped), with the reason on standard error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway configuration file.
    #[arg(long, short = 'c', default_value = "/etc/bulkhead/gateway.toml")]
    pub config: PathBuf,
    /// Log filter when RUST_LOG is not set: off, error, warn, info, debug, trace, or a list of
    /// `TARGET=LEVEL` directives (`info,bulkhead_gateway::runtime=debug`).
    #[arg(long, default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,
    /// Format of the daemon's own log on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Validate the configuration and the policy, print the routing it would install, and exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    init_tracing(&args)?;
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.check {
        return check(&config);
    }
    crate::runtime::run(config).context("bulkhead run")?;
    Ok(ExitCode::SUCCESS)
}

fn check(config: &Config) -> anyhow::Result<ExitCode> {
    let mut source = crate::runtime::policy::PolicySource::new(config.policy.file.clone());
    let (_, loaded) = source.initial().map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "configuration ok: gateway {}, TUN {} with {} queue(s), MTU {}",
        config.gateway.id,
        config.gateway.tun,
        config.queues(),
        crate::runtime::tun_mtu(config)
    );
    match source.file() {
        Some(f) => println!("policy ok: {} ({} rules)", f.display(), loaded.rules),
        None => println!("no policy file: the gateway would deny everything"),
    }
    if config.gateway.manage_routing {
        println!("routing it installs:");
        // The fast path's part is installed only where the kernel supports it (checked at start).
        let fast = config
            .gateway
            .fast_path
            .then_some(config.gateway.fast_path_mark);
        let plan = crate::runtime::routing_plan(config, fast);
        for c in crate::routing::plan_commands(&plan) {
            println!("  {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks a log filter. `tracing`'s own syntax takes any bare word as a target name, so a
/// misspelt level (`--log-level verbose`) would be accepted and silently log nothing of the
/// gateway: every directive must therefore name a level, alone or after `=`.
pub fn parse_log_filter(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = |why: &str| {
        Err(format!(
            "`{}`: {why} (expected off, error, warn, info, debug, trace, or TARGET=LEVEL \
             directives separated by commas)",
            crate::input::echo(s)
        ))
    };
    if s.trim().is_empty() {
        return bad("empty log filter");
    }
    for directive in s.split(',') {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            Some(_) => return bad("a directive has no target before `=`"),
            None => directive,
        };
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return bad(&format!(
                "`{}` is not a log level",
                crate::input::echo(level.trim())
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .or_else(|e| bad(&e.to_string()))
}

/// Sets up the daemon's own log. `RUST_LOG`, when set, wins over `--log-level` and is checked
/// the same way: an invalid filter is an error, not a silent fall-back to `info`.
fn init_tracing(args: &Args) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            parse_log_filter(&v).map_err(|e| anyhow::anyhow!("RUST_LOG: {e}"))?
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => args.log_level.clone(),
        Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!("RUST_LOG is not valid UTF-8"),
    };
    let filter = EnvFilter::try_new(&directives).map_err(|e| anyhow::anyhow!("log filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A subscriber already installed (tests calling `main` twice) keeps logging: not an error.
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_log_filter;

    #[test]
    fn log_filters_must_name_levels() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,bulkhead_gateway::runtime=debug",
            "h2=off,trace",
        ] {
            assert!(parse_log_filter(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "verbose",
            "inf",
            "info,",
            "=debug",
            "x=loud",
            "info\nFAKE=1",
        ] {
            let err = parse_log_filter(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
