//! Bulkhead's policy engine: a pure library (no I/O beyond reading the policy files it is given,
//! no async runtime, no protobuf).
//!
//! The flow of a policy through this crate:
//!
//! ```text
//! policy.toml --load (spans kept for errors)--> validate --> Policy (model, no spans)
//!             --compile--> CompiledPolicy (immutable lookup tables) --PolicyStore::store--> readers
//! ```
//!
//! - [`load`]: TOML to [`Policy`], gathering every error and warning with file, line and column.
//! - [`name`]: the one normalisation of names used for patterns and for names from the wire.
//! - [`compile`](mod@compile): address interval tables, the name trie, port classes and first-match
//!   resolution over sorted rule lists; see that module for the architecture.
//! - [`naive`]: the rule-by-rule reference evaluator the compiled table is tested against.
//! - [`least`]: blast radius, verdict changes over observed flows, recommended policies.
//! - [`PolicyStore`]: lock-free publication of compiled policies (arc-swap).
//!
//! The data path only ever sees [`CompiledPolicy`] through a [`PolicyStore`]; it asks two
//! questions, [`CompiledPolicy::evaluate`] and [`CompiledPolicy::evaluate_without_name`].
#![forbid(unsafe_code)]

pub mod compile;
mod echo;
pub mod file;
pub mod least;
pub mod load;
pub mod model;
pub mod naive;
pub mod name;
mod store;
mod suffix;
mod trie;

pub use compile::{
    compile, CompileStats, CompiledPolicy, Query, RuleRef, SynDecision, Verdict,
    MAX_NAME_CLASSES_REPORTED,
};
pub use load::{
    load_policy_file, load_policy_str, shadowed_rules, Diagnostic, LoadError, LoadedPolicy,
    Location, Severity, MAX_REPORTED_ERRORS, MAX_REPORTED_WARNINGS,
};
pub use model::{
    Action, AddressGroup, DefaultAction, DstGroup, DstSpec, K8sSelector, Mode, Policy, PolicyError,
    PortRange, Ports, Protocol, QuicMode, Rule, Selector, SmartGroup, SniDnsCheck, SrcSpec,
    Transport, WebGroup,
};
pub use name::{normalize_name, NameError, NamePattern, PatternError};
pub use store::PolicyStore;
