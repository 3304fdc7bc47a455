//! From observation to least privilege: the analyses behind `bulkhead blast-radius`,
//! `bulkhead diff`, `bulkheadctl recommend` and `bulkheadctl diff`. Pure functions over the
//! policy model and the compiled table; the commands read files, records and captures and hand
//! the results here.
//!
//! - [`blast`]: per SmartGroup, every destination a policy lets it reach, with the rule that
//!   permits it, what earlier rules carve out of it, the watch rules that observe it, and flags
//!   for reach wider than it looks (`any`, wildcards, port ranges, exfiltration-capable
//!   destinations, a deny that is only a watch rule).
//! - [`flows`]: observed flows evaluated under two policies, the changes counted and grouped by
//!   SmartGroup and destination, in bounded memory.
//! - [`recommend`]: a least-privilege policy (TOML text) from observed flows.
//! - [`changes`]: rule and group changes between two policies.
//! - [`catalog`]: WebGroup catalogs read from their text (the exfiltration-capable catalog, the
//!   AI-provider catalog), and the overlap of name patterns.
//!
//! Reach is computed on group names, like the shadowed-rule warning: an earlier rule carves its
//! traffic out of a later rule's reach when it names the same destination group or `any`. Two
//! different groups whose addresses or names happen to overlap are not subtracted from each
//! other, so the reach reported can be larger than the real one, never smaller: the safe side
//! for a question about exposure.

pub mod blast;
pub mod catalog;
pub mod changes;
pub mod flows;
pub mod recommend;
mod space;
mod time;

pub use space::{PortSet, Space};
