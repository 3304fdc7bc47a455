//! The operator subcommands: connect with the operator certificate, call, print.

use std::process::ExitCode;
use std::time::Duration;

use control_proto::v1::operator_client::OperatorClient;
use control_proto::v1::{
    DiffRequest, HistoryRequest, PushRequest, RecommendRequest, ReportRequest, RollbackRequest,
    StatusRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::{output, Command, Connection, EXIT_ANSWERED_ERROR, EXIT_UNREACHABLE, EXIT_USAGE};
use crate::identity::{endpoint_host, TlsFiles};

/// Largest inventory file `push --inventory` sends.
const MAX_INVENTORY_BYTES: u64 = crate::inventory::MAX_INVENTORY_BYTES;

/// A failed command: what to print and the exit status.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// Statuses that mean "not reached" or "certificate refused" exit 3; anything else the
    /// controller answered exits 1.
    fn status(status: tonic::Status) -> Failure {
        let code = match status.code() {
            Code::Unavailable | Code::Unauthenticated | Code::PermissionDenied | Code::Unknown => {
                EXIT_UNREACHABLE
            }
            _ => EXIT_ANSWERED_ERROR,
        };
        let message = match status.code() {
            Code::Unavailable | Code::Unknown => {
                format!("cannot reach the controller: {}", describe(&status))
            }
            _ => format!("the controller refused: {}", status.message()),
        };
        Failure { code, message }
    }
}

/// A status message with its transport cause (TLS errors live in the source chain).
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) fn run(connection: &Connection, json: bool, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bulkheadctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(call(connection, json, command)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("bulkheadctl: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn connect(connection: &Connection) -> Result<OperatorClient<Channel>, Failure> {
    let missing =
        |what: &str, env: &str| Failure::usage(format!("no {what}: give --{what} or set {env}"));
    let url = connection
        .url
        .as_deref()
        .ok_or_else(|| missing("controller", "BULKHEAD_CONTROLLER"))?;
    let ca = connection
        .ca
        .as_deref()
        .ok_or_else(|| missing("ca", "BULKHEAD_CA"))?;
    let cert = connection
        .cert
        .as_deref()
        .ok_or_else(|| missing("cert", "BULKHEAD_CERT"))?;
    let key = connection
        .key
        .as_deref()
        .ok_or_else(|| missing("key", "BULKHEAD_KEY"))?;
    let host = endpoint_host(url)
        .filter(|_| url.starts_with("https://"))
        .ok_or_else(|| Failure::usage(format!("`{url}` is not an https:// URL")))?;
    let files = TlsFiles::read(ca, cert, key).map_err(|e| Failure::usage(format!("{e:#}")))?;
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Failure::usage(format!("`{url}`: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .tls_config(files.client_config(&host))
        .map_err(|e| Failure::usage(format!("TLS files: {e}")))?;
    let channel = endpoint.connect().await.map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        message: format!("cannot reach the controller at {url}: {}", error_chain(&e)),
    })?;
    Ok(OperatorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn call(outer: &Connection, json: bool, command: Command) -> Result<u8, Failure> {
    // Local input is checked before dialing, so a typo is a usage error, not a network one.
    let (connection, request) = match command {
        Command::Push {
            connection,
            policy,
            inventory,
        } => {
            let bundle = crate::bundle::bundle_file(&policy).map_err(Failure::usage)?;
            let inventory = match inventory {
                Some(path) => Some(read_inventory(&path)?),
                None => None,
            };
            let push = PushRequest {
                policy: Some(bundle),
                inventory,
            };
            (connection, Request::Push(push))
        }
        Command::Report { connection, since } => {
            let window = crate::config::parse_duration(&since)
                .map_err(|e| Failure::usage(format!("--since: {e}")))?;
            (connection, Request::Report(window.as_secs()))
        }
        Command::Recommend {
            connection,
            since,
            group,
        } => {
            let window = crate::config::parse_duration(&since)
                .map_err(|e| Failure::usage(format!("--since: {e}")))?;
            let request = RecommendRequest {
                since_seconds: window.as_secs().max(1),
                group: group.unwrap_or_default(),
            };
            (connection, Request::Recommend(request))
        }
        Command::Diff {
            connection,
            from,
            to,
            since,
        } => {
            let since_seconds = match since {
                Some(s) => crate::config::parse_duration(&s)
                    .map_err(|e| Failure::usage(format!("--since: {e}")))?
                    .as_secs()
                    .max(1),
                None => 0,
            };
            let request = DiffRequest {
                from_version: from,
                to_version: to,
                since_seconds,
            };
            (connection, Request::Diff(request))
        }
        Command::Status { connection } => (connection, Request::Status),
        Command::History { connection } => (connection, Request::History),
        Command::Rollback {
            connection,
            version,
        } => (connection, Request::Rollback(version)),
        Command::Serve { .. } | Command::Certs(_) => {
            return Err(Failure::usage("not an operator command"))
        }
    };
    let mut client = connect(&connection.or(outer)).await?;
    match request {
        Request::Status => {
            let reply = client
                .status(StatusRequest {})
                .await
                .map_err(Failure::status)?;
            output::status(&reply.into_inner(), json);
            Ok(0)
        }
        Request::Push(push) => {
            let reply = client.push(push).await.map_err(Failure::status)?;
            Ok(output::push(&reply.into_inner(), json))
        }
        Request::Rollback(version) => {
            let reply = client
                .rollback(RollbackRequest { version })
                .await
                .map_err(Failure::status)?;
            Ok(output::push(&reply.into_inner(), json))
        }
        Request::History => {
            let reply = client
                .history(HistoryRequest { limit: 0 })
                .await
                .map_err(Failure::status)?;
            output::history(&reply.into_inner(), json);
            Ok(0)
        }
        Request::Recommend(request) => {
            let reply = client.recommend(request).await.map_err(Failure::status)?;
            output::recommend(&reply.into_inner(), json);
            Ok(0)
        }
        Request::Diff(request) => {
            let reply = client.diff(request).await.map_err(Failure::status)?;
            output::diff(&reply.into_inner(), json);
            Ok(0)
        }
        Request::Report(since_seconds) => {
            let reply = client
                .report(ReportRequest { since_seconds })
                .await
                .map_err(Failure::status)?;
            output::report(&reply.into_inner(), json);
            Ok(0)
        }
    }
}

enum Request {
    Status,
    Push(PushRequest),
    Rollback(u64),
    History,
    Report(u64),
    Recommend(RecommendRequest),
    Diff(DiffRequest),
}

fn read_inventory(path: &std::path::Path) -> Result<String, Failure> {
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        .len();
    if size > MAX_INVENTORY_BYTES {
        return Err(Failure::usage(format!(
            "{}: larger than {MAX_INVENTORY_BYTES} bytes",
            path.display()
        )));
    }
    policy_engine::file::read_regular_text(path, MAX_INVENTORY_BYTES)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}
