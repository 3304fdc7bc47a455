//! Typed metric labels: each label is a closed set of values, and a value indexes its counter
//! directly (no string is looked up per packet or per decision).
//!
//! The label strings are part of the metrics contract (dashboards select on them): they must stay
//! byte-identical across releases. The tests below pin them against the names the pipeline and
//! the decision records use.

use crate::pipeline::DropReason;
use crate::record::{Disposition, Reason, RecordAction};

/// Label value for anything outside a vocabulary.
pub const OTHER: &str = "other";

/// Reported decision actions (`action` label), in counter order.
pub const ACTIONS: [&str; 2] = ["allowed", "denied"];
/// Dispositions (`disposition` label), in counter order.
pub const DISPOSITIONS: [&str; 3] = ["allowed", "blocked", "detected"];

/// A label with a fixed set of values. `index` is always below `VALUES.len()`, so a typed value
/// can only ever reach its own counter.
pub trait Label: Copy {
    /// Every value of the label, in counter (and rendering) order.
    const VALUES: &'static [&'static str];
    /// Where this value sits in [`Label::VALUES`].
    fn index(self) -> usize;
}

impl Label for RecordAction {
    const VALUES: &'static [&'static str] = &ACTIONS;
    fn index(self) -> usize {
        match self {
            RecordAction::Allowed => 0,
            RecordAction::Denied => 1,
        }
    }
}

impl Label for Disposition {
    const VALUES: &'static [&'static str] = &DISPOSITIONS;
    fn index(self) -> usize {
        match self {
            Disposition::Allowed => 0,
            Disposition::Blocked => 1,
            Disposition::Detected => 2,
        }
    }
}

/// What the DNS check of names did, per worker (`event` label of
/// `bulkhead_dns_check_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsEvent {
    /// The name was in the shared cache at verdict time: no wait.
    CacheHit,
    /// It was not: a lookup was asked for (or was already under way).
    CacheMiss,
    /// Lookups asked of the resolver.
    LookupAsked,
    /// Lookups not asked because too many names were waiting.
    LookupRefused,
    /// Destination addresses the name does not resolve to.
    Mismatch,
    /// Lookups that failed or timed out.
    Failure,
    /// Answers learned from DNS responses crossing the gateway.
    Learned,
}

impl DnsEvent {
    /// Every value, in counter order.
    pub const ALL: [DnsEvent; 7] = [
        DnsEvent::CacheHit,
        DnsEvent::CacheMiss,
        DnsEvent::LookupAsked,
        DnsEvent::LookupRefused,
        DnsEvent::Mismatch,
        DnsEvent::Failure,
        DnsEvent::Learned,
    ];
}

impl Label for DnsEvent {
    const VALUES: &'static [&'static str] = &[
        "cache_hit",
        "cache_miss",
        "lookup_asked",
        "lookup_refused",
        "mismatch",
        "failure",
        "learned",
    ];
    fn index(self) -> usize {
        match self {
            DnsEvent::CacheHit => 0,
            DnsEvent::CacheMiss => 1,
            DnsEvent::LookupAsked => 2,
            DnsEvent::LookupRefused => 3,
            DnsEvent::Mismatch => 4,
            DnsEvent::Failure => 5,
            DnsEvent::Learned => 6,
        }
    }
}

/// How the resolver thread's lookups ended (`outcome` label of `bulkhead_dns_queries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsQueryOutcome {
    /// Answered with addresses, or with none (NXDOMAIN, no records).
    Answered,
    /// No answer in time.
    Timeout,
    /// SERVFAIL, REFUSED, or the resolver could not be reached.
    Error,
    /// Not sent: too many in flight, or the request queue was full.
    Refused,
}

impl DnsQueryOutcome {
    /// Every value, in rendering order.
    pub const ALL: [DnsQueryOutcome; 4] = [
        DnsQueryOutcome::Answered,
        DnsQueryOutcome::Timeout,
        DnsQueryOutcome::Error,
        DnsQueryOutcome::Refused,
    ];
}

impl Label for DnsQueryOutcome {
    const VALUES: &'static [&'static str] = &["answered", "timeout", "error", "refused"];
    fn index(self) -> usize {
        match self {
            DnsQueryOutcome::Answered => 0,
            DnsQueryOutcome::Timeout => 1,
            DnsQueryOutcome::Error => 2,
            DnsQueryOutcome::Refused => 3,
        }
    }
}

/// Where the enforced policy came from (`source` label of `bulkhead_policy_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOrigin {
    /// The controller's snapshot persisted by an earlier run, enforced at start.
    LastKnownGood,
    /// The local `[policy] file`.
    File,
    /// A snapshot the controller pushed to this run.
    Controller,
    /// Nothing to enforce: every flow is denied.
    DenyAll,
}

impl PolicyOrigin {
    /// The label value (also used in log lines).
    pub fn as_str(self) -> &'static str {
        Self::VALUES[self.index()]
    }
}

impl Label for PolicyOrigin {
    const VALUES: &'static [&'static str] = &["last_known_good", "file", "controller", "deny_all"];
    fn index(self) -> usize {
        match self {
            PolicyOrigin::LastKnownGood => 0,
            PolicyOrigin::File => 1,
            PolicyOrigin::Controller => 2,
            PolicyOrigin::DenyAll => 3,
        }
    }
}

/// Decision reasons (`reason` label of `bulkhead_decisions_total`): every reason this build
/// emits, then `other` (which `Reason::Unknown` counts under).
const DECISION_REASONS: [&str; Reason::KNOWN.len() + 1] = {
    let mut out = [OTHER; Reason::KNOWN.len() + 1];
    let mut i = 0;
    while i < Reason::KNOWN.len() {
        out[i] = Reason::KNOWN[i].as_str();
        i += 1;
    }
    out
};

impl Label for Reason {
    const VALUES: &'static [&'static str] = &DECISION_REASONS;
    fn index(self) -> usize {
        // `Reason::index` is the position in `Reason::KNOWN`, and `KNOWN.len()` (here: `other`)
        // for `Unknown`; record.rs asserts that at compile time.
        Reason::index(self)
    }
}

/// The `reason` label of the drop counters: the pipeline's drop kinds, with the fail-closed kind
/// broken out by its record reason. Where a fail-closed reason has the name of a drop kind
/// (`flow_limit`, `bad_checksum`), both share the counter, as the label says the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropLabel {
    Malformed,
    Fragment,
    Policy,
    Cut,
    FlowLimit,
    BadChecksum,
    Duplicate,
    SynData,
    OutOfState,
    Rule,
    Default,
    NoSni,
    NotTls,
    ParseError,
    InspectTimeout,
    InspectOverflow,
    MemoryPressure,
    PolicyUpdate,
    Midstream,
    AmbiguousOverlap,
    FragmentedHeader,
    SecondHello,
    HostChanged,
    QuicBlocked,
    SniAddressMismatch,
    SniDnsFailure,
    SniDnsTimeout,
    SniDnsUnverified,
    Other,
}

/// Label values of [`DropLabel`], indexed by its discriminant.
const DROP_REASONS: [&str; DropLabel::Other as usize + 1] = [
    "malformed",
    "fragment",
    "policy",
    "cut",
    "flow_limit",
    "bad_checksum",
    "duplicate",
    "syn_data",
    "out_of_state",
    "rule",
    "default",
    "no_sni",
    "not_tls",
    "parse_error",
    "inspect_timeout",
    "inspect_overflow",
    "memory_pressure",
    "policy_update",
    "midstream",
    "ambiguous_overlap",
    "fragmented_header",
    "second_hello",
    "host_changed",
    "quic_blocked",
    "sni_address_mismatch",
    "sni_dns_failure",
    "sni_dns_timeout",
    "sni_dns_unverified",
    OTHER,
];

impl DropLabel {
    /// Exhaustive on both enums, so a new drop kind or record reason does not compile until it
    /// has a counter.
    const fn of(reason: DropReason) -> DropLabel {
        match reason {
            DropReason::Malformed => DropLabel::Malformed,
            DropReason::Fragment => DropLabel::Fragment,
            DropReason::Policy => DropLabel::Policy,
            DropReason::Cut => DropLabel::Cut,
            DropReason::FlowLimit => DropLabel::FlowLimit,
            DropReason::BadChecksum => DropLabel::BadChecksum,
            DropReason::Duplicate => DropLabel::Duplicate,
            DropReason::SynData => DropLabel::SynData,
            DropReason::OutOfState => DropLabel::OutOfState,
            DropReason::FailClosed(r) => DropLabel::fail_closed(r),
        }
    }

    const fn fail_closed(reason: Reason) -> DropLabel {
        match reason {
            Reason::Rule => DropLabel::Rule,
            Reason::Default => DropLabel::Default,
            Reason::NoSni => DropLabel::NoSni,
            Reason::NotTls => DropLabel::NotTls,
            Reason::ParseError => DropLabel::ParseError,
            Reason::InspectTimeout => DropLabel::InspectTimeout,
            Reason::InspectOverflow => DropLabel::InspectOverflow,
            Reason::MemoryPressure => DropLabel::MemoryPressure,
            Reason::FlowLimit => DropLabel::FlowLimit,
            Reason::PolicyUpdate => DropLabel::PolicyUpdate,
            Reason::Midstream => DropLabel::Midstream,
            Reason::AmbiguousOverlap => DropLabel::AmbiguousOverlap,
            Reason::FragmentedHeader => DropLabel::FragmentedHeader,
            Reason::BadChecksum => DropLabel::BadChecksum,
            Reason::SecondHello => DropLabel::SecondHello,
            Reason::HostChanged => DropLabel::HostChanged,
            Reason::QuicBlocked => DropLabel::QuicBlocked,
            Reason::SniAddressMismatch => DropLabel::SniAddressMismatch,
            Reason::SniDnsFailure => DropLabel::SniDnsFailure,
            Reason::SniDnsTimeout => DropLabel::SniDnsTimeout,
            Reason::SniDnsUnverified => DropLabel::SniDnsUnverified,
            Reason::Unknown => DropLabel::Other,
        }
    }
}

impl Label for DropReason {
    const VALUES: &'static [&'static str] = &DROP_REASONS;
    fn index(self) -> usize {
        DropLabel::of(self) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every drop reason the pipeline can report, fail-closed ones with each record reason.
    fn every_drop_reason() -> impl Iterator<Item = DropReason> {
        DropReason::ALL
            .into_iter()
            .filter(|d| !matches!(d, DropReason::FailClosed(_)))
            .chain(
                Reason::KNOWN
                    .into_iter()
                    .chain([Reason::Unknown])
                    .map(DropReason::FailClosed),
            )
    }

    #[test]
    fn drop_labels_are_the_pipelines_names() {
        for d in every_drop_reason() {
            let want = if d.as_str() == Reason::Unknown.as_str() {
                OTHER
            } else {
                d.as_str()
            };
            assert_eq!(DropReason::VALUES[d.index()], want, "{d:?}");
        }
    }

    /// The drop vocabulary as releases before typed labels built it at start-up: the drop kinds
    /// (fail-closed aside), then the record reasons, duplicates removed, then `other`. The
    /// order is the rendering order, which scrapes and dashboards see.
    #[test]
    fn drop_label_order_is_unchanged() {
        let mut legacy: Vec<&str> = Vec::new();
        let kinds = DropReason::ALL
            .iter()
            .filter(|d| !matches!(d, DropReason::FailClosed(_)))
            .map(|d| d.as_str());
        for name in kinds.chain(Reason::KNOWN.iter().map(|r| r.as_str())) {
            if !legacy.contains(&name) {
                legacy.push(name);
            }
        }
        legacy.push(OTHER);
        assert_eq!(DropReason::VALUES, legacy.as_slice());
    }

    #[test]
    fn decision_labels_are_the_record_names() {
        for r in Reason::KNOWN {
            assert_eq!(Reason::VALUES[Label::index(r)], r.as_str());
        }
        assert_eq!(Reason::VALUES[Label::index(Reason::Unknown)], OTHER);
        assert_eq!(Reason::VALUES.len(), Reason::KNOWN.len() + 1);
        for (a, name) in [
            (RecordAction::Allowed, "allowed"),
            (RecordAction::Denied, "denied"),
        ] {
            assert_eq!(RecordAction::VALUES[a.index()], name);
        }
        for (d, name) in [
            (Disposition::Allowed, "allowed"),
            (Disposition::Blocked, "blocked"),
            (Disposition::Detected, "detected"),
        ] {
            assert_eq!(Disposition::VALUES[d.index()], name);
        }
    }

    #[test]
    fn vocabularies_are_bounded_and_distinct() {
        for values in [
            RecordAction::VALUES,
            Disposition::VALUES,
            Reason::VALUES,
            DropReason::VALUES,
            PolicyOrigin::VALUES,
        ] {
            assert!(values.len() < 40);
            let set: std::collections::BTreeSet<_> = values.iter().collect();
            assert_eq!(set.len(), values.len(), "{values:?}");
        }
        for (o, name) in [
            (PolicyOrigin::LastKnownGood, "last_known_good"),
            (PolicyOrigin::File, "file"),
            (PolicyOrigin::Controller, "controller"),
            (PolicyOrigin::DenyAll, "deny_all"),
        ] {
            assert_eq!(o.as_str(), name);
        }
        // The reason vocabularies end with the catch-all.
        assert_eq!(Reason::VALUES.last(), Some(&OTHER));
        assert_eq!(DropReason::VALUES.last(), Some(&OTHER));
    }
}
