//! The `bulkhead` subcommands. Each submodule owns one subcommand: its arguments (clap derive)
//! and a `main` that returns the process exit code.

use clap::{Parser, Subcommand};

pub mod blast_radius;
pub mod check_policy;
pub mod demo;
pub mod diff;
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
    /// Per SmartGroup, what the policy lets it reach, through which rule, and what is wider
    /// than it looks.
    BlastRadius(blast_radius::Args),
    /// Which observed flows (decision records, captures) would change verdict under a
    /// candidate policy.
    Diff(diff::Args),
    /// Build a small network of namespaces and show the gateway at work (root).
    Demo(demo::Args),
}

/// Parses the process's command line and runs it; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    match Cli::try_parse() {
        Ok(cli) => dispatch(cli),
        Err(err) => usage_error(&err),
    }
}

/// Prints a command-line error and returns its exit code (0 for `--help` / `--version`, 2
/// otherwise).
///
/// clap quotes the offending argument verbatim; an argument can be megabytes long or hold
/// newlines that would forge further lines, so every quoted value is bounded and escaped here
/// before the message is shown.
pub fn usage_error(err: &clap::Error) -> std::process::ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return std::process::ExitCode::SUCCESS;
    }
    let mut raw: Vec<&str> = Vec::new();
    for (kind, value) in err.context() {
        if !matches!(
            kind,
            ContextKind::InvalidValue | ContextKind::InvalidArg | ContextKind::InvalidSubcommand
        ) {
            continue;
        }
        match value {
            ContextValue::String(v) => raw.push(v),
            ContextValue::Strings(vs) => raw.extend(vs.iter().map(String::as_str)),
            _ => {}
        }
    }
    // Longest first, so a value that contains another is replaced whole.
    raw.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut text = err.render().to_string();
    for v in raw {
        let safe = crate::input::echo(v);
        if safe != v {
            text = text.replace(v, &safe);
        }
    }
    eprint!("{text}");
    std::process::ExitCode::from(2)
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
        Command::BlastRadius(args) => {
            crate::sys::default_sigpipe();
            blast_radius::main(args)
        }
        Command::Diff(args) => {
            crate::sys::default_sigpipe();
            diff::main(args)
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
