//! `bulkheadctl`: see the library's `cli` module.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    bulkhead_controller::cli::main(bulkhead_controller::cli::Cli::parse())
}
