//! The `bulkhead` subcommands. Each submodule owns one subcommand: its arguments (clap derive)
//! and a `main` that returns the process exit code.

use clap::{Parser, Subcommand};

pub mod check_policy;
pub mod demo;
pub mod explain;
pub mod replay;
pub mod run;

/// Bulkhead: egress containment gateway for AI workloads.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway daemon.
    Run(run::Args),
    /// Validate a policy file and print a summary.
    CheckPolicy(check_policy::Args),
    /// Explain the verdict a policy gives one connection.
    Explain(explain::Args),
    /// Replay captured packets through the pipeline offline.
    Replay(replay::Args),
    /// Build a small network of namespaces and show the gateway at work (root).
    Demo(demo::Args),
}

/// Runs the parsed command line and returns the process exit code.
pub fn dispatch(cli: Cli) -> std::process::ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::CheckPolicy(args) => {
            crate::sys::default_sigpipe();
            check_policy::main(args)
        }
        Command::Explain(args) => {
            crate::sys::default_sigpipe();
            explain::main(args)
        }
        Command::Replay(args) => {
            crate::sys::default_sigpipe();
            replay::main(args)
        }
        Command::Demo(args) => demo::main(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bulkhead: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
