use clap::Parser;

fn main() -> std::process::ExitCode {
    bulkhead_gateway::cli::dispatch(bulkhead_gateway::cli::Cli::parse())
}
