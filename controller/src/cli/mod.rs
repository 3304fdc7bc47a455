//! `bulkheadctl`: `serve` runs the controller, `certs` makes lab certificates, and every other
//! subcommand talks to a running controller with an operator certificate.
//!
//! Exit status: 0 success, 1 the controller answered with an error, 2 usage errors (clap's own
//! code), 3 the controller cannot be reached or refuses the certificate.

mod client;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status when the controller answered with an error.
pub const EXIT_ANSWERED_ERROR: u8 = 1;
/// Exit status for usage errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the controller cannot be reached or refuses the certificate.
pub const EXIT_UNREACHABLE: u8 = 3;

/// The Bulkhead controller and its operator commands.
#[derive(Debug, Parser)]
#[command(name = "bulkheadctl", version)]
pub struct Cli {
    /// Connection options may come before the subcommand too (`certs issue` has its own
    /// `--controller`, so they cannot be global).
    #[command(flatten)]
    connection: Connection,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the controller.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The controller, e.g. https://controller.internal:50051.
    #[arg(long = "controller", env = "BULKHEAD_CONTROLLER")]
    pub url: Option<String>,
    /// The CA certificate (PEM).
    #[arg(long, env = "BULKHEAD_CA")]
    pub ca: Option<PathBuf>,
    /// The operator certificate (PEM).
    #[arg(long, env = "BULKHEAD_CERT")]
    pub cert: Option<PathBuf>,
    /// The operator key (PEM).
    #[arg(long, env = "BULKHEAD_KEY")]
    pub key: Option<PathBuf>,
}

impl Connection {
    /// Options given after the subcommand win over those given before it.
    fn or(self, outer: &Connection) -> Connection {
        Connection {
            url: self.url.or_else(|| outer.url.clone()),
            ca: self.ca.or_else(|| outer.ca.clone()),
            cert: self.cert.or_else(|| outer.cert.clone()),
            key: self.key.or_else(|| outer.key.clone()),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller.
    Serve {
        /// controller.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// The fleet: every gateway, its state and the version it enforces.
    Status {
        #[command(flatten)]
        connection: Connection,
    },
    /// Validate a policy, bundle its includes and serve it as the next version.
    Push {
        #[command(flatten)]
        connection: Connection,
        /// The policy file.
        policy: PathBuf,
        /// An inventory to resolve SmartGroup selectors with (instead of the controller's).
        #[arg(long)]
        inventory: Option<PathBuf>,
    },
    /// Serve an earlier version's content again, as a new version.
    Rollback {
        #[command(flatten)]
        connection: Connection,
        /// The version to serve again.
        version: u64,
    },
    /// Every version served, newest first.
    History {
        #[command(flatten)]
        connection: Connection,
    },
    /// The fleet's decision records per source and destination (AI providers first).
    Report {
        #[command(flatten)]
        connection: Connection,
        /// The window, e.g. 24h or 7d.
        #[arg(long, default_value = "24h")]
        since: String,
    },
    /// A least-privilege policy (TOML on standard output) from the fleet's decision records:
    /// per SmartGroup, the destinations seen and nothing else; what it would deny that is
    /// permitted today on standard error.
    Recommend {
        #[command(flatten)]
        connection: Connection,
        /// The window of records, e.g. 24h or 7d.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Only this SmartGroup.
        #[arg(long)]
        group: Option<String>,
    },
    /// Rule, group and verdict changes between two served versions, the verdicts over the
    /// fleet's decision records.
    Diff {
        #[command(flatten)]
        connection: Connection,
        /// The earlier version.
        from: u64,
        /// The later version.
        to: u64,
        /// Only records of this window (default: every record kept).
        #[arg(long)]
        since: Option<String>,
    },
    /// A lab CA and certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a CA in DIR (ca.pem, ca.key).
    Init {
        /// Where the files go.
        dir: PathBuf,
    },
    /// Issue a certificate signed by the CA in DIR.
    Issue {
        /// The CA directory; the certificate and key are written there.
        dir: PathBuf,
        /// A gateway certificate for this gateway id.
        #[arg(long, group = "subject")]
        gateway: Option<String>,
        /// An operator certificate for this name.
        #[arg(long, group = "subject")]
        operator: Option<String>,
        /// The controller's certificate for these DNS names or addresses.
        #[arg(long, group = "subject", num_args = 1..)]
        controller: Option<Vec<String>>,
    },
}

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Certs(command) => certs(command),
        command => client::run(&cli.connection, cli.json, command),
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    let config = match crate::config::ControllerConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bulkheadctl: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bulkheadctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let running = crate::server::start(
            &config,
            crate::server::Options::default(),
            shutdown_signal(),
        )
        .await?;
        running.join().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkheadctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

fn certs(command: CertsCommand) -> ExitCode {
    use crate::certs::{init, issue, Subject};
    let result = match command {
        CertsCommand::Init { dir } => init(&dir),
        CertsCommand::Issue {
            dir,
            gateway,
            operator,
            controller,
        } => {
            let subject = match (gateway, operator, controller) {
                (Some(id), None, None) => Subject::Gateway(id),
                (None, Some(name), None) => Subject::Operator(name),
                (None, None, Some(hosts)) => Subject::Controller(hosts),
                _ => {
                    eprintln!(
                        "bulkheadctl: certs issue needs one of --gateway ID, --operator NAME, --controller HOST..."
                    );
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            issue(&dir, &subject)
        }
    };
    match result {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulkheadctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
