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
    /// Log filter when RUST_LOG is not set (error, warn, info, debug, trace, or a directive list).
    #[arg(long, default_value = "info")]
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
    init_tracing(&args);
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.check {
        return check(&config);
    }
    crate::runtime::run(config).context("gateway stopped")?;
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
        let plan = crate::routing::RoutingPlan {
            tun: config.gateway.tun.clone(),
            interfaces: config.gateway.interfaces.clone(),
            table: config.gateway.route_table,
            priority: config.gateway.rule_priority,
        };
        for c in crate::routing::plan_commands(&plan) {
            println!("  {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(args: &Args) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
