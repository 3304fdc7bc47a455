//! The operator API: status, push, rollback, history, report, recommend, diff. Every call needs an operator
//! certificate; the operator's name from it is recorded with the versions it makes.

use std::sync::{Arc, Weak};

use control_proto::v1::operator_server::Operator;
use control_proto::v1::{
    DiffReply, DiffRequest, GatewayStatus, HistoryReply, HistoryRequest, PushReply, PushRequest,
    RecommendReply, RecommendRequest, ReportReply, ReportRequest, ReportRow, RollbackRequest,
    StatusReply, StatusRequest, VersionInfo,
};
use tonic::{Request, Response, Status};

use super::sources::{self, PublishError, RollbackError, Source};
use super::Controller;
use crate::config::now_ms;
use crate::identity::require_operator;
use crate::records::sort_report;
use crate::store::Origin;

const DEFAULT_HISTORY: usize = 1000;
const MAX_HISTORY: usize = 100_000;
const DEFAULT_REPORT_SECONDS: u64 = 86_400;
const MAX_REPORT_SECONDS: u64 = 100 * 365 * 86_400;
const DEFAULT_RECOMMEND_SECONDS: u64 = 7 * 86_400;

/// The `Operator` service.
#[derive(Debug, Clone)]
pub struct OperatorService {
    controller: Weak<Controller>,
}

impl OperatorService {
    /// The service of `controller`.
    pub fn new(controller: &Arc<Controller>) -> OperatorService {
        OperatorService {
            controller: Arc::downgrade(controller),
        }
    }

    fn controller(&self) -> Result<Arc<Controller>, Status> {
        self.controller
            .upgrade()
            .ok_or_else(|| Status::unavailable("the controller is shutting down"))
    }
}

fn store_error(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        require_operator(&request)?;
        let controller = self.controller()?;
        let gateways = controller
            .fleet
            .snapshot()
            .into_iter()
            .map(|(row, connected)| GatewayStatus {
                id: row.id,
                address: row.address,
                connected,
                build_version: row.build_version,
                enforced_version: row.enforced_version,
                state: row.state,
                last_seen_unix_ms: row.last_seen_ms,
                errors: row.errors,
            })
            .collect();
        Ok(Response::new(StatusReply {
            version: controller.version(),
            gateways,
            errors: controller.source_errors(),
        }))
    }

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let operator = require_operator(&request)?;
        let controller = self.controller()?;
        let request = request.into_inner();
        let bundle = request
            .policy
            .ok_or_else(|| Status::invalid_argument("a push needs a policy"))?;
        let source = Source::from_bundle(bundle, request.inventory);
        let mut guard = controller.sources.lock().await;
        let result = sources::publish(
            &controller,
            &mut guard,
            source,
            Origin::Push,
            &operator,
            false,
        )
        .await;
        match result {
            Ok(published) => {
                tracing::info!(%operator, version = published.version, "push served");
                Ok(Response::new(PushReply {
                    version: published.version,
                    digest: published.digest,
                    errors: Vec::new(),
                    warnings: published.warnings,
                }))
            }
            Err(PublishError::Invalid(invalid)) => {
                tracing::warn!(%operator, errors = invalid.errors.len(), "push refused");
                Ok(Response::new(PushReply {
                    version: 0,
                    digest: String::new(),
                    errors: invalid.errors,
                    warnings: invalid.warnings,
                }))
            }
            Err(PublishError::Store(e)) => Err(store_error(e)),
        }
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<PushReply>, Status> {
        let operator = require_operator(&request)?;
        let controller = self.controller()?;
        let target = request.into_inner().version;
        match sources::rollback(&controller, target, &operator).await {
            Ok(published) => {
                tracing::info!(%operator, target, version = published.version, "rollback served");
                Ok(Response::new(PushReply {
                    version: published.version,
                    digest: published.digest,
                    errors: Vec::new(),
                    warnings: Vec::new(),
                }))
            }
            Err(RollbackError::NotFound(v)) => {
                Err(Status::not_found(format!("there is no version {v}")))
            }
            Err(RollbackError::Corrupt(e)) => Err(Status::data_loss(e)),
            Err(RollbackError::Store(e)) => Err(store_error(e)),
        }
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryReply>, Status> {
        require_operator(&request)?;
        let controller = self.controller()?;
        let limit = match request.into_inner().limit as usize {
            0 => DEFAULT_HISTORY,
            n => n.min(MAX_HISTORY),
        };
        let versions = controller
            .blocking(move |s| s.history(limit))
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|v| VersionInfo {
                version: v.version,
                time_unix_ms: v.data.time_ms,
                origin: v.data.origin.as_str().to_string(),
                operator: v.data.operator,
                digest: v.data.digest,
                rollback_of: v.data.rollback_of,
            })
            .collect();
        Ok(Response::new(HistoryReply { versions }))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportReply>, Status> {
        require_operator(&request)?;
        let controller = self.controller()?;
        let seconds = match request.into_inner().since_seconds {
            0 => DEFAULT_REPORT_SECONDS,
            n => n.min(MAX_REPORT_SECONDS),
        };
        let until = now_ms();
        let since = until.saturating_sub(seconds * 1000);
        let mut rows = controller
            .blocking(move |s| s.report(since, until))
            .await
            .map_err(store_error)?;
        sort_report(&mut rows);
        let rows = rows
            .into_iter()
            .map(|r| ReportRow {
                src_group: r.src_group,
                src_ip: r.src_ip,
                dst_group: r.dst_group,
                dst_name: r.dst_name,
                flows: r.flows,
                bytes_out: r.bytes_out,
                bytes_in: r.bytes_in,
                allowed: r.allowed,
                denied: r.denied,
                detected: r.detected,
            })
            .collect();
        Ok(Response::new(ReportReply {
            since_unix_ms: since,
            until_unix_ms: until,
            rows,
        }))
    }

    async fn recommend(
        &self,
        request: Request<RecommendRequest>,
    ) -> Result<Response<RecommendReply>, Status> {
        require_operator(&request)?;
        let controller = self.controller()?;
        let request = request.into_inner();
        let seconds = match request.since_seconds {
            0 => DEFAULT_RECOMMEND_SECONDS,
            n => n.min(MAX_REPORT_SECONDS),
        };
        super::least::recommend(&controller, seconds, request.group)
            .await
            .map(Response::new)
    }

    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<DiffReply>, Status> {
        require_operator(&request)?;
        let controller = self.controller()?;
        let request = request.into_inner();
        super::least::diff(
            &controller,
            request.from_version,
            request.to_version,
            request.since_seconds.min(MAX_REPORT_SECONDS),
        )
        .await
        .map(Response::new)
    }
}
