//! `bulkhead demo`: builds a small network of namespaces, runs the gateway on the built-in
//! sample policy and shows permitted, denied, rejected and watched connections from real clients
//! with their decision records. Root only; removes everything it built, also on Ctrl-C.
//!
//! The demo itself is [`bulkhead_lab::demo`]; this module parses the options, runs this very
//! binary as the gateway and turns the result into the exit status.

use std::process::ExitCode;
use std::time::Duration;

use bulkhead_lab::demo::{self, DemoOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds a client waits before a silently dropped connection counts as timed out.
    #[arg(long, default_value_t = 2.0)]
    pub deny_timeout: f64,
    /// Print the decision records as full JSON lines instead of one summary line each.
    #[arg(long)]
    pub json: bool,
    /// Print the built-in sample policy and exit.
    #[arg(long)]
    pub print_policy: bool,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    if args.print_policy {
        print!("{}", demo::DEMO_POLICY);
        return Ok(ExitCode::SUCCESS);
    }
    if !(0.2..=60.0).contains(&args.deny_timeout) {
        anyhow::bail!("--deny-timeout must be between 0.2 and 60 seconds");
    }
    demo::preflight()?;
    install_interrupt_cleanup()?;
    let opts = DemoOptions {
        gateway_binary: std::env::current_exe()?,
        deny_timeout: Duration::from_secs_f64(args.deny_timeout),
        show_records: args.json,
    };
    if demo::run(&opts)? {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// On Ctrl-C (or SIGTERM): stop the gateway, remove the namespaces, exit 130.
fn install_interrupt_cleanup() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Register inside the runtime before any namespace exists, so no window is left uncovered.
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("demo-interrupt".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            });
            eprintln!("\ninterrupted: stopping the gateway and removing the lab...");
            bulkhead_lab::emergency_cleanup();
            std::process::exit(130);
        })?;
    Ok(())
}
