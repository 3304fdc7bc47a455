//! Where versions come from: the watched policy and inventory files, pushes and rollbacks, and
//! how a source becomes a stored, published version.
//!
//! A [`Source`] is what a version was built from: a policy bundle and, for a push with
//! `--inventory`, a pinned inventory. It is stored with every version, so that an inventory
//! change re-resolves the policy served now (whatever its origin) and a rollback serves an old
//! content and then follows later inventories from its own source.
//!
//! Files are polled: each poll bundles the policy (the file and its includes) and hashes it, and
//! looks at the inventory's size and modification time before hashing it. Polling works the same
//! on every file system, sees atomic renames and in-place writes alike, and a content hash means
//! that touching a file without changing it makes no version. The hash of the last version built
//! from each file is kept in the store, so a restart does not make a new version of a file that
//! did not change while the controller was down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use control_proto::convert::{digest, policy_from_proto, policy_to_proto};
use control_proto::v1;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{Controller, Served};
use crate::bundle::{bundle_file, load_bundle, Invalid};
use crate::config::{now_ms, PolicySection};
use crate::inventory::{resolve, Inventory};
use crate::store::{NewVersion, Origin, StoreError};

const POLICY_HASH: &str = "policy_file_hash";
const INVENTORY_HASH: &str = "inventory_file_hash";
/// Most records kept whatever the retention, so a flood cannot fill the disk.
const MAX_RECORDS: u64 = 20_000_000;

/// What a version was built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    /// The policy file's name as given.
    pub name: String,
    /// The policy text.
    pub text: String,
    /// Includes: (path relative to the policy, text).
    pub includes: Vec<(String, String)>,
    /// An inventory pinned by a push, used instead of the inventory file.
    pub inventory: Option<String>,
}

impl Source {
    /// The source of a pushed bundle.
    pub fn from_bundle(bundle: v1::PolicyBundle, inventory: Option<String>) -> Source {
        Source {
            name: bundle.name,
            text: bundle.text,
            includes: bundle
                .includes
                .into_iter()
                .map(|f| (f.path, f.text))
                .collect(),
            inventory,
        }
    }

    fn bundle(&self) -> v1::PolicyBundle {
        v1::PolicyBundle {
            name: self.name.clone(),
            text: self.text.clone(),
            includes: self
                .includes
                .iter()
                .map(|(path, text)| v1::BundledFile {
                    path: path.clone(),
                    text: text.clone(),
                })
                .collect(),
        }
    }

    fn hash(&self) -> String {
        digest(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The controller's view of its sources. Held under an async mutex: one version is built at a
/// time, so version numbers and "what is served now" can never interleave.
#[derive(Debug)]
pub struct Sources {
    policy_file: Option<PathBuf>,
    inventory_file: Option<PathBuf>,
    /// The source of the version served now.
    current: Option<Source>,
    /// The last valid inventory read from the inventory file.
    inventory: Inventory,
    inventory_stat: Option<(SystemTime, u64)>,
    inventory_hash: Option<String>,
    policy_hash: Option<String>,
    /// Hash of a policy file that failed, so it is reported once rather than at every poll.
    policy_failed: Option<String>,
}

impl Sources {
    /// Sources from the `[policy]` section.
    pub fn new(section: &PolicySection) -> Sources {
        Sources {
            policy_file: section.file.clone(),
            inventory_file: section.inventory.clone(),
            current: None,
            inventory: Inventory::default(),
            inventory_stat: None,
            inventory_hash: None,
            policy_hash: None,
            policy_failed: None,
        }
    }
}

/// Why a source was not served.
#[derive(Debug)]
pub enum PublishError {
    /// The policy or its inventory is invalid: every error (and warning).
    Invalid(Invalid),
    /// The store failed.
    Store(StoreError),
}

/// What [`publish`] did.
#[derive(Debug)]
pub struct Published {
    /// The version served (a new one, or the current one when nothing changed).
    pub version: u64,
    /// Its digest.
    pub digest: String,
    /// Warnings of the policy.
    pub warnings: Vec<String>,
}

/// Builds the wire policy of a source: validate the bundle, resolve selectors against the
/// inventory, convert, and check that the wire form converts back (what every gateway will do).
fn build(
    source: &Source,
    file_inventory: &Inventory,
    scratch: &std::path::Path,
) -> Result<(v1::Policy, Vec<String>), Invalid> {
    let loaded = load_bundle(&source.bundle(), scratch)?;
    let pinned;
    let inventory = match &source.inventory {
        Some(text) => {
            pinned = Inventory::parse(text, "pushed inventory").map_err(|e| Invalid {
                errors: vec![e.to_string()],
                warnings: loaded.warnings.clone(),
            })?;
            &pinned
        }
        None => file_inventory,
    };
    let mut policy = loaded.policy;
    resolve(&mut policy, inventory);
    let wire = policy_to_proto(&policy);
    if let Err(e) = policy_from_proto(&wire) {
        return Err(Invalid {
            errors: e.0,
            warnings: loaded.warnings,
        });
    }
    // Compile once here so a policy that the gateways would spend long on is seen first here;
    // compiling never fails, the tables are dropped.
    drop(policy_engine::compile(&policy, 0));
    Ok((wire, loaded.warnings))
}

/// The model of the policy served now as its operator wrote it (SmartGroup selectors and
/// literal CIDRs, before resolution), for views that copy its definitions; `None` when the
/// version served was not built from a source this controller kept.
pub async fn current_definitions(controller: &Controller) -> Option<policy_engine::Policy> {
    let source = controller.sources.lock().await.current.clone()?;
    let scratch = controller
        .scratch
        .join(format!("{:016x}", rand::random::<u64>()));
    tokio::task::spawn_blocking(move || load_bundle(&source.bundle(), &scratch).ok())
        .await
        .ok()
        .flatten()
        .map(|loaded| loaded.policy)
}

/// Builds, stores and publishes a source. With `skip_unchanged`, a source whose content equals
/// what is served now makes no new version (a touched file, an irrelevant inventory change).
pub async fn publish(
    controller: &Arc<Controller>,
    sources: &mut Sources,
    source: Source,
    origin: Origin,
    operator: &str,
    skip_unchanged: bool,
) -> Result<Published, PublishError> {
    let scratch = controller
        .scratch
        .join(format!("{:016x}", rand::random::<u64>()));
    let inventory = sources.inventory.clone();
    let job_source = source.clone();
    let (wire, warnings) =
        tokio::task::spawn_blocking(move || build(&job_source, &inventory, &scratch))
            .await
            .map_err(|e| PublishError::Store(StoreError(format!("build task failed: {e}"))))?
            .map_err(PublishError::Invalid)?;
    let content = wire.encode_to_vec();
    let content_digest = digest(&content);
    if skip_unchanged {
        if let Some(served) = controller.current.borrow().as_ref() {
            if served.digest == content_digest {
                let version = served.version;
                sources.current = Some(source);
                return Ok(Published {
                    version,
                    digest: content_digest,
                    warnings,
                });
            }
        }
    }
    let new = NewVersion {
        time_ms: now_ms(),
        origin,
        operator: operator.to_string(),
        digest: content_digest.clone(),
        content,
        source: serde_json::to_vec(&source).unwrap_or_default(),
        rollback_of: 0,
    };
    let version = controller
        .blocking(move |store| store.append_version(&new))
        .await
        .map_err(PublishError::Store)?;
    sources.current = Some(source);
    serve(controller, version, content_digest.clone(), wire);
    Ok(Published {
        version,
        digest: content_digest,
        warnings,
    })
}

fn serve(controller: &Controller, version: u64, digest: String, policy: v1::Policy) {
    tracing::info!(version, %digest, "serving a new version");
    controller.current.send_replace(Some(Arc::new(Served {
        version,
        digest,
        policy,
    })));
}

/// Why a rollback failed.
#[derive(Debug)]
pub enum RollbackError {
    /// No such version.
    NotFound(u64),
    /// The stored content no longer decodes (a damaged database).
    Corrupt(String),
    /// The store failed.
    Store(StoreError),
}

/// Serves the content of `target` again as a new version.
pub async fn rollback(
    controller: &Arc<Controller>,
    target: u64,
    operator: &str,
) -> Result<Published, RollbackError> {
    let mut sources = controller.sources.lock().await;
    let old = controller
        .blocking(move |store| store.version(target))
        .await
        .map_err(RollbackError::Store)?
        .ok_or(RollbackError::NotFound(target))?;
    let wire = v1::Policy::decode(old.data.content.as_slice())
        .map_err(|e| RollbackError::Corrupt(format!("version {target}: {e}")))?;
    let source: Option<Source> = serde_json::from_slice(&old.data.source).ok();
    let new = NewVersion {
        time_ms: now_ms(),
        origin: Origin::Rollback,
        operator: operator.to_string(),
        rollback_of: target,
        ..old.data
    };
    let content_digest = new.digest.clone();
    let version = controller
        .blocking(move |store| store.append_version(&new))
        .await
        .map_err(RollbackError::Store)?;
    sources.current = source;
    serve(controller, version, content_digest.clone(), wire);
    Ok(Published {
        version,
        digest: content_digest,
        warnings: Vec::new(),
    })
}

/// At start: serve the newest stored version and remember the file hashes it was built from.
pub async fn restore(controller: &Arc<Controller>) -> anyhow::Result<()> {
    let mut sources = controller.sources.lock().await;
    let (latest, policy_hash, inventory_hash) = controller
        .blocking(|store| {
            Ok((
                store.latest()?,
                store.meta(POLICY_HASH)?,
                store.meta(INVENTORY_HASH)?,
            ))
        })
        .await?;
    sources.policy_hash = policy_hash;
    sources.inventory_hash = inventory_hash;
    if let Some(latest) = latest {
        let wire = v1::Policy::decode(latest.data.content.as_slice())
            .map_err(|e| anyhow::anyhow!("stored version {}: {e}", latest.version))?;
        sources.current = serde_json::from_slice(&latest.data.source).ok();
        serve(controller, latest.version, latest.data.digest, wire);
    }
    Ok(())
}

/// Polls the watched files forever.
pub async fn watch_files(controller: Arc<Controller>) {
    let mut tick = tokio::time::interval(controller.options.poll_interval);
    let mut last_prune = std::time::Instant::now();
    loop {
        tick.tick().await;
        poll_files(&controller).await;
        if last_prune.elapsed() >= std::time::Duration::from_secs(60) {
            last_prune = std::time::Instant::now();
            let before = now_ms().saturating_sub(controller.retention.as_millis() as u64);
            let pruned = controller
                .blocking(move |store| store.prune_records(before, MAX_RECORDS))
                .await;
            match pruned {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "pruned decision records"),
                Err(e) => tracing::warn!(error = %e, "cannot prune decision records"),
            }
        }
    }
}

/// One look at the watched files: a changed, valid file becomes the next version.
pub async fn poll_files(controller: &Arc<Controller>) {
    let mut sources = controller.sources.lock().await;
    let inventory_changed = poll_inventory(controller, &mut sources).await;
    if let Some(source) = poll_policy(controller, &mut sources) {
        let hash = source.hash();
        match publish(
            controller,
            &mut sources,
            source,
            Origin::File,
            "controller",
            true,
        )
        .await
        {
            Ok(p) => {
                controller.set_errors(Some(Vec::new()), None);
                sources.policy_hash = Some(hash.clone());
                remember(controller, POLICY_HASH, hash).await;
                tracing::info!(version = p.version, "policy file loaded");
            }
            Err(e) => {
                sources.policy_failed = Some(hash);
                report_policy_error(controller, e);
            }
        }
        return;
    }
    if inventory_changed {
        let Some(current) = sources.current.clone() else {
            return;
        };
        if current.inventory.is_some() {
            return;
        }
        let result = publish(
            controller,
            &mut sources,
            current,
            Origin::File,
            "controller",
            true,
        );
        match result.await {
            Ok(p) => tracing::info!(version = p.version, "inventory change applied"),
            Err(e) => report_policy_error(controller, e),
        }
    }
}

fn report_policy_error(controller: &Controller, error: PublishError) {
    match error {
        PublishError::Invalid(invalid) => {
            for e in &invalid.errors {
                tracing::error!(error = %e, "policy not served");
            }
            controller.set_errors(Some(invalid.errors), None);
        }
        PublishError::Store(e) => {
            tracing::error!(error = %e, "policy not served");
            controller.set_errors(Some(vec![e.to_string()]), None);
        }
    }
}

async fn remember(controller: &Controller, key: &'static str, value: String) {
    if let Err(e) = controller
        .blocking(move |store| store.set_meta(key, &value))
        .await
    {
        tracing::warn!(error = %e, "cannot record the file hash");
    }
}

/// The policy file's source when it changed since the last version built from it.
fn poll_policy(controller: &Controller, sources: &mut Sources) -> Option<Source> {
    let path = sources.policy_file.as_ref()?;
    let bundle = match bundle_file(path) {
        Ok(bundle) => bundle,
        Err(e) => {
            controller.set_errors(Some(vec![e]), None);
            return None;
        }
    };
    let source = Source::from_bundle(bundle, None);
    let hash = source.hash();
    if sources.policy_hash.as_deref() == Some(hash.as_str())
        || sources.policy_failed.as_deref() == Some(hash.as_str())
    {
        return None;
    }
    Some(source)
}

/// Reloads the inventory file when it changed; true when a new valid inventory was taken.
async fn poll_inventory(controller: &Controller, sources: &mut Sources) -> bool {
    let Some(path) = sources.inventory_file.clone() else {
        return false;
    };
    let stat = std::fs::metadata(&path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
    if stat.is_some() && stat == sources.inventory_stat {
        return false;
    }
    sources.inventory_stat = stat;
    let loaded = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).unwrap_or_default();
        (digest(&bytes), Inventory::load(&path))
    })
    .await;
    let Ok((hash, result)) = loaded else {
        return false;
    };
    match result {
        Ok(inventory) => {
            controller.set_errors(None, Some(Vec::new()));
            sources.inventory = inventory;
            let changed = sources.inventory_hash.as_deref() != Some(hash.as_str());
            sources.inventory_hash = Some(hash.clone());
            remember(controller, INVENTORY_HASH, hash).await;
            // At start, the hash is compared with the one stored at the last version, so an
            // inventory that changed while the controller was down counts too.
            changed
        }
        Err(e) => {
            // The stat is kept, so a broken file is reported once, not at every poll; the next
            // write changes it and is looked at again.
            tracing::error!(error = %e, "inventory not used");
            controller.set_errors(None, Some(vec![e.to_string()]));
            false
        }
    }
}
