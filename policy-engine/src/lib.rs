//! Bulkhead's policy engine: a pure library (no I/O beyond reading the policy files it is given,
//! no async runtime, no protobuf).
//!
//! The flow of a policy through this crate:
//!
//! ```text
//! policy.toml --load--> Policy (model, spans kept for errors) --validate--> diagnostics
//!             --compile--> CompiledPolicy (immutable lookup tables) --PolicyStore::swap--> readers
//! ```
//!
//! The data path only ever sees [`CompiledPolicy`] through a [`PolicyStore`]; it asks two
//! questions, [`CompiledPolicy::evaluate`] and [`CompiledPolicy::evaluate_without_name`].
#![forbid(unsafe_code)]

mod api;
pub use api::*;
