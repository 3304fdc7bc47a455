//! `Recommend` and `Diff` of the operator API: the fleet's stored decision records read as
//! flows and handed to the policy engine's least-privilege analyses
//! (`policy_engine::least`). Records are read in pages of [`PAGE`] rows on a blocking thread,
//! each page under the store lock only while it is read, so a scan of millions of records
//! neither holds them all in memory nor stalls the gateways' record uploads.

use std::sync::Arc;

use control_proto::convert::policy_from_proto;
use control_proto::v1::{DiffReply, PolicyChange, RecommendReply, VerdictChange};
use policy_engine::least::catalog::Catalog;
use policy_engine::least::changes::policy_changes;
use policy_engine::least::flows::FlowDiff;
use policy_engine::least::recommend::Recommender;
use policy_engine::{compile, Policy};
use prost::Message;
use tonic::Status;

use super::{sources, Controller};
use crate::config::{now_ms, rfc3339};
use crate::records::flow_of;
use crate::store::{Store, StoreError};

/// Records read per page.
pub const PAGE: usize = 10_000;

/// The provider catalog that recommended policies express names through.
const PROVIDERS: &str = include_str!("../../../configs/webgroups/ai-providers.toml");
/// The exfiltration-capable destinations catalog.
const EXFILTRATION: &str = include_str!("../../../configs/webgroups/exfiltration.toml");

/// Calls `f(time_ms, json)` for every record of the window; returns how many were read.
fn scan(
    store: &dyn Store,
    since_ms: u64,
    until_ms: u64,
    f: &mut dyn FnMut(u64, &str),
) -> Result<u64, StoreError> {
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = store.records_page(since_ms, until_ms, after, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(count);
        };
        after = last.0;
        for (_, time, json) in &page {
            count += 1;
            f(*time, json);
        }
    }
}

fn store_error(e: StoreError) -> Status {
    Status::internal(e.to_string())
}

/// The model of a stored version.
async fn version_model(controller: &Arc<Controller>, version: u64) -> Result<Policy, Status> {
    let stored = controller
        .blocking(move |s| s.version(version))
        .await
        .map_err(store_error)?
        .ok_or_else(|| Status::not_found(format!("there is no version {version}")))?;
    let wire = control_proto::v1::Policy::decode(stored.data.content.as_slice())
        .map_err(|e| Status::data_loss(format!("version {version}: {e}")))?;
    policy_from_proto(&wire).map_err(|e| Status::data_loss(format!("version {version}: {e}")))
}

/// A least-privilege policy from the records of the last `seconds`, for `group` (or all).
pub async fn recommend(
    controller: &Arc<Controller>,
    seconds: u64,
    group: String,
) -> Result<RecommendReply, Status> {
    let served = controller.current.borrow().clone().ok_or_else(|| {
        Status::failed_precondition("no version is served yet: nothing to start from")
    })?;
    let resolved = policy_from_proto(&served.policy)
        .map_err(|e| Status::internal(format!("the version served: {e}")))?;
    // Group membership comes from the resolved policy (what the gateways enforce); the
    // definitions copied into the recommendation come from what the operator wrote (selectors
    // stay selectors), where the source is known.
    let mut definitions = resolved.clone();
    if let Some(source) = sources::current_definitions(controller).await {
        for g in &mut definitions.smartgroups {
            if let Some(s) = source.smartgroups.iter().find(|s| s.name == g.name) {
                g.cidrs = s.cidrs.clone();
                g.selectors = s.selectors.clone();
                g.description = s.description.clone();
            }
        }
    }
    let until = now_ms();
    let since = until.saturating_sub(seconds.saturating_mul(1000));
    let version = served.version;
    controller
        .blocking(move |store| {
            let compiled = compile(&resolved, version);
            let group = (!group.is_empty()).then_some(group.as_str());
            let mut rec = match Recommender::new(&definitions, &compiled, group) {
                Ok(r) => r,
                Err(e) => return Ok(Err(Status::invalid_argument(e))),
            };
            let mut unreadable = 0u64;
            let records = scan(store, since, until, &mut |time, json| match flow_of(json) {
                Some((flow, blocked)) => rec.add(&flow, time, blocked),
                None => unreadable += 1,
            })?;
            let providers = Catalog::parse(PROVIDERS).unwrap_or_default();
            let exfil = Catalog::parse(EXFILTRATION).unwrap_or_default();
            let header = vec![
                format!(
                    "Recommended by `bulkheadctl recommend` from {records} decision records of the fleet,"
                ),
                format!("{} to {}, starting from version {version}.", rfc3339(since), rfc3339(until)),
                "Test it before enforcing: bulkhead check-policy, then bulkhead diff --policy CURRENT.toml --candidate THIS.toml --records decisions.jsonl".to_owned(),
            ];
            let out = rec.finish(&providers, "configs/webgroups/ai-providers.toml", &exfil, &header);
            // What is handed out must load: a failure here is a bug, not a recommendation.
            if let Err(e) = policy_engine::load_policy_str(&out.toml, std::path::Path::new("recommended.toml")) {
                return Ok(Err(Status::internal(format!("the recommendation does not load: {e}"))));
            }
            let mut summary = out.summary;
            if unreadable > 0 {
                summary.push(format!(
                    "{unreadable} record(s) were flow ends, decisions made by a bound rather than a rule, or not readable as flows, and were not counted"
                ));
            }
            Ok(Ok(RecommendReply {
                policy: out.toml,
                summary,
                based_on_version: version,
                since_unix_ms: since,
                until_unix_ms: until,
                records,
                flows: out.flows,
            }))
        })
        .await
        .map_err(store_error)?
}

/// Rule, group and verdict changes from version `from` to `to` over the records of the last
/// `seconds` (every record kept when 0).
pub async fn diff(
    controller: &Arc<Controller>,
    from: u64,
    to: u64,
    seconds: u64,
) -> Result<DiffReply, Status> {
    let old = version_model(controller, from).await?;
    let new = version_model(controller, to).await?;
    let until = now_ms();
    let since = if seconds == 0 {
        0
    } else {
        until.saturating_sub(seconds.saturating_mul(1000))
    };
    controller
        .blocking(move |store| {
            let changes = policy_changes(&old, &new);
            let (oc, nc) = (compile(&old, from), compile(&new, to));
            let mut diff = FlowDiff::new(&oc, &nc);
            let mut skipped = 0u64;
            scan(store, since, until, &mut |_, json| match flow_of(json) {
                Some((flow, _)) => diff.add(&flow),
                None => skipped += 1,
            })?;
            let (totals, buckets) = diff.finish();
            Ok(DiffReply {
                from_version: from,
                to_version: to,
                since_unix_ms: since,
                until_unix_ms: until,
                policy_changes: changes
                    .into_iter()
                    .map(|c| PolicyChange {
                        kind: c.kind.to_owned(),
                        name: c.name,
                        change: c.change.to_owned(),
                        detail: c.detail,
                    })
                    .collect(),
                verdict_changes: buckets
                    .into_iter()
                    .map(|b| VerdictChange {
                        change: b.change.as_str().to_owned(),
                        src_group: b.src_group,
                        dst: b.dst,
                        flows: b.flows,
                        old_action: b.old.action.to_owned(),
                        old_rule: b.old.rule,
                        new_action: b.new.action.to_owned(),
                        new_rule: b.new.rule,
                        examples: b.examples,
                    })
                    .collect(),
                flows: totals.flows,
                unchanged: totals.unchanged,
                newly_denied: totals.newly_denied,
                newly_permitted: totals.newly_permitted,
                rule_changed: totals.rule_changed,
                skipped,
            })
        })
        .await
        .map_err(store_error)
}
