//! The workload inventory and SmartGroup selector resolution.
//!
//! The inventory is a TOML file that a sync job writes from cloud APIs or Kubernetes:
//!
//! ```toml
//! [[workloads]]
//! name = "agent-7f9c"
//! ips = ["10.1.2.3", "fd00:1::3"]
//! tags = { env = "prod", app = "agent" }
//! k8s = { namespace = "agents", labels = { tier = "prod" } }
//! ```
//!
//! A selector matches a workload when every tag it names is present with the same value and,
//! if it has a `k8s` part, the workload runs in that namespace (when one is given) and carries
//! every label it names. A selector with no condition at all would match every workload; the
//! policy loader does not accept one, and [`resolve`] matches nothing with it rather than
//! everything (fail closed: an empty condition must never widen a group to the whole fleet).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use policy_engine::{Policy, Selector};
use serde::Deserialize;

/// Largest inventory file accepted. A fleet of 100k workloads fits well within it.
pub const MAX_INVENTORY_BYTES: u64 = 64 * 1024 * 1024;

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("{path}: cannot read the inventory: {source}")]
    Read {
        /// The inventory file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_INVENTORY_BYTES`].
    #[error("{path}: the inventory is larger than {MAX_INVENTORY_BYTES} bytes")]
    TooLarge {
        /// The inventory file.
        path: String,
    },
    /// The file is not a valid inventory; the message carries line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The inventory file.
        path: String,
        /// What is wrong and where.
        message: String,
    },
    /// Workload entries are invalid (every problem, one per line).
    #[error("{path}: invalid workloads:\n{}", .problems.join("\n"))]
    Invalid {
        /// The inventory file.
        path: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// Kubernetes facts about a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sFacts {
    /// The namespace the pod runs in.
    pub namespace: String,
    /// The pod's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One workload: a VM, a pod, a task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// A unique name, for reports.
    pub name: String,
    /// Its addresses (IPv4 and IPv6).
    pub ips: Vec<IpAddr>,
    /// Cloud tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Kubernetes facts, when it is a pod.
    #[serde(default)]
    pub k8s: Option<K8sFacts>,
}

/// The whole inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Every workload.
    #[serde(default)]
    pub workloads: Vec<Workload>,
}

impl Inventory {
    /// Reads and validates an inventory file.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let display = path.display().to_string();
        let metadata = std::fs::metadata(path).map_err(|source| InventoryError::Read {
            path: display.clone(),
            source,
        })?;
        if metadata.len() > MAX_INVENTORY_BYTES {
            return Err(InventoryError::TooLarge { path: display });
        }
        // Not a blocking read: a FIFO or a device in place of the file is refused.
        let text = policy_engine::file::read_regular_text(path, MAX_INVENTORY_BYTES).map_err(
            |source| InventoryError::Read {
                path: display.clone(),
                source,
            },
        )?;
        Inventory::parse(&text, &display)
    }

    /// Parses and validates inventory text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Inventory, InventoryError> {
        let inventory: Inventory = toml::from_str(text).map_err(|e| InventoryError::Parse {
            path: origin.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        let problems = inventory.problems();
        if problems.is_empty() {
            Ok(inventory)
        } else {
            Err(InventoryError::Invalid {
                path: origin.to_string(),
                problems,
            })
        }
    }

    /// Every problem of the entries: duplicate names, workloads without addresses, one address
    /// claimed by two workloads (identity would be ambiguous).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        let mut owners: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for workload in &self.workloads {
            if workload.name.is_empty() {
                problems.push("a workload has an empty name".to_string());
            } else if !names.insert(workload.name.as_str()) {
                problems.push(format!("workload `{}` is listed twice", workload.name));
            }
            if workload.ips.is_empty() {
                problems.push(format!("workload `{}` has no address", workload.name));
            }
            for ip in &workload.ips {
                if let Some(owner) = owners.insert(*ip, &workload.name) {
                    if owner != workload.name {
                        problems.push(format!(
                            "address {ip} belongs to both `{owner}` and `{}`",
                            workload.name
                        ));
                    }
                }
            }
        }
        problems
    }

    /// The workloads a selector matches, in inventory order.
    pub fn select<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = &'a Workload> {
        self.workloads
            .iter()
            .filter(move |workload| selector_matches(selector, workload))
    }
}

fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{column}: {}", error.message())
        }
        None => error.message().to_string(),
    }
}

/// Whether `selector` selects `workload`. A selector without any condition selects nothing.
pub fn selector_matches(selector: &Selector, workload: &Workload) -> bool {
    let has_condition = !selector.tags.is_empty()
        || selector
            .k8s
            .as_ref()
            .is_some_and(|k| k.namespace.is_some() || !k.labels.is_empty());
    if !has_condition {
        return false;
    }
    let tags_match = selector
        .tags
        .iter()
        .all(|(key, value)| workload.tags.get(key) == Some(value));
    let k8s_match = match (&selector.k8s, &workload.k8s) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(wanted), Some(facts)) => {
            wanted
                .namespace
                .as_ref()
                .is_none_or(|namespace| *namespace == facts.namespace)
                && wanted
                    .labels
                    .iter()
                    .all(|(key, value)| facts.labels.get(key) == Some(value))
        }
    };
    tags_match && k8s_match
}

/// What [`resolve`] did to one SmartGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResolution {
    /// The SmartGroup.
    pub group: String,
    /// Workloads its selectors matched.
    pub workloads: Vec<String>,
    /// Host CIDRs added to the group's own CIDRs.
    pub added: usize,
}

/// Resolves the selectors of every SmartGroup of `policy` against `inventory`: each matched
/// workload's addresses are added to the group's CIDRs as host routes (/32, /128), without
/// duplicates and without repeating addresses the group's own CIDRs already cover. Selectors are
/// kept, so a later inventory can be resolved again from the original policy.
pub fn resolve(policy: &mut Policy, inventory: &Inventory) -> Vec<GroupResolution> {
    let mut report = Vec::new();
    for group in &mut policy.smartgroups {
        if group.selectors.is_empty() {
            continue;
        }
        let mut matched = BTreeSet::new();
        let mut hosts = BTreeSet::new();
        for selector in &group.selectors {
            for workload in inventory.select(selector) {
                matched.insert(workload.name.clone());
                hosts.extend(workload.ips.iter().copied().map(IpNet::from));
            }
        }
        let before = group.cidrs.len();
        for host in hosts {
            if !group.cidrs.iter().any(|cidr| cidr.contains(&host)) {
                group.cidrs.push(host);
            }
        }
        report.push(GroupResolution {
            group: group.name.clone(),
            workloads: matched.into_iter().collect(),
            added: group.cidrs.len() - before,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const INVENTORY: &str = r#"
[[workloads]]
name = "agent-7f9c"
ips = ["10.1.2.3", "fd00:1::3"]
tags = { env = "prod", app = "agent" }
k8s = { namespace = "agents", labels = { tier = "prod" } }

[[workloads]]
name = "agent-dev-1"
ips = ["10.2.0.5"]
tags = { env = "dev", app = "agent" }

[[workloads]]
name = "mcp-github"
ips = ["10.1.9.9"]
tags = { env = "prod", app = "mcp" }
k8s = { namespace = "mcp", labels = { tier = "prod" } }
"#;

    const POLICY: &str = r#"
[policy]
default_action = "deny"

[smartgroups.prod-agents]
cidrs = ["10.9.8.7/32"]
selectors = [{ tags = { env = "prod", app = "agent" } }]

[smartgroups.prod-pods]
selectors = [{ k8s = { labels = { tier = "prod" } } }]

[smartgroups.mcp]
cidrs = ["10.1.9.0/24"]
selectors = [{ k8s = { namespace = "mcp" } }]

[smartgroups.nobody]
selectors = [{ tags = { env = "staging" } }]

[webgroups.openai]
domains = ["api.openai.com"]

[[rules]]
name = "prod-agents-to-openai"
priority = 100
src = ["prod-agents", "prod-pods", "mcp", "nobody"]
dst = ["openai"]
action = "permit"
"#;

    fn policy() -> Policy {
        policy_engine::load_policy_str(POLICY, Path::new("policy.toml"))
            .expect("the test policy is valid")
            .policy
    }

    fn group(policy: &Policy, name: &str) -> Vec<String> {
        let group = policy.smartgroups.iter().find(|g| g.name == name).unwrap();
        group.cidrs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn selectors_resolve_to_host_cidrs_of_matching_workloads() {
        let inventory = Inventory::parse(INVENTORY, "inventory.toml").unwrap();
        let mut policy = policy();
        let report = resolve(&mut policy, &inventory);

        assert_eq!(
            group(&policy, "prod-agents"),
            ["10.9.8.7/32", "10.1.2.3/32", "fd00:1::3/128"]
        );
        assert_eq!(
            group(&policy, "prod-pods"),
            ["10.1.2.3/32", "10.1.9.9/32", "fd00:1::3/128"]
        );
        // Already covered by the group's own /24: nothing added.
        assert_eq!(group(&policy, "mcp"), ["10.1.9.0/24"]);
        assert!(group(&policy, "nobody").is_empty());

        let mcp = report.iter().find(|r| r.group == "mcp").unwrap();
        assert_eq!(mcp.workloads, ["mcp-github"]);
        assert_eq!(mcp.added, 0);
        let pods = report.iter().find(|r| r.group == "prod-pods").unwrap();
        assert_eq!(pods.workloads, ["agent-7f9c", "mcp-github"]);
        assert_eq!(pods.added, 3);
    }

    #[test]
    fn resolved_policy_compiles_and_attributes_the_workload() {
        let inventory = Inventory::parse(INVENTORY, "inventory.toml").unwrap();
        let mut policy = policy();
        resolve(&mut policy, &inventory);
        let compiled = policy_engine::compile(&policy, 1);
        let verdict = compiled.evaluate(&policy_engine::Query {
            src: "fd00:1::3".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            transport: policy_engine::Transport::Tcp,
            dst_port: 443,
            name: Some("api.openai.com"),
        });
        assert_eq!(verdict.effective_action, policy_engine::Action::Permit);
        let groups: Vec<&str> = compiled.src_groups(&verdict).collect();
        assert_eq!(groups, ["prod-agents", "prod-pods"]);
    }

    #[test]
    fn a_selector_without_conditions_selects_nothing() {
        let inventory = Inventory::parse(INVENTORY, "inventory.toml").unwrap();
        let empty = Selector::default();
        assert_eq!(inventory.select(&empty).count(), 0);
    }

    #[test]
    fn k8s_selector_never_matches_a_vm() {
        let inventory = Inventory::parse(INVENTORY, "inventory.toml").unwrap();
        let selector = Selector {
            tags: BTreeMap::from([("env".to_string(), "dev".to_string())]),
            k8s: Some(policy_engine::K8sSelector::default()),
        };
        // agent-dev-1 has the tag but is no pod.
        assert_eq!(inventory.select(&selector).count(), 0);
    }

    #[test]
    fn invalid_inventories_report_every_problem() {
        let text = r#"
[[workloads]]
name = "a"
ips = ["10.0.0.1"]

[[workloads]]
name = "a"
ips = []

[[workloads]]
name = "b"
ips = ["10.0.0.1"]
"#;
        let err = Inventory::parse(text, "inv.toml").unwrap_err().to_string();
        assert!(err.contains("workload `a` is listed twice"), "{err}");
        assert!(err.contains("workload `a` has no address"), "{err}");
        assert!(
            err.contains("address 10.0.0.1 belongs to both `a` and `b`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let text = "[[workloads]]\nname = \"a\"\nips = [\"10.0.0.300\"]\n";
        let err = Inventory::parse(text, "inv.toml").unwrap_err().to_string();
        assert!(err.starts_with("inv.toml: 3:"), "{err}");

        let text = "[[workloads]]\nname = \"a\"\nips = [\"10.0.0.1\"]\ncolour = \"red\"\n";
        let err = Inventory::parse(text, "inv.toml").unwrap_err().to_string();
        assert!(err.starts_with("inv.toml: 4:1"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused_before_reading() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(MAX_INVENTORY_BYTES + 1).unwrap();
        assert!(matches!(
            Inventory::load(file.path()),
            Err(InventoryError::TooLarge { .. })
        ));
    }
}
