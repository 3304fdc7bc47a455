//! Decision-log records and the sink they are handed to.
//!
//! One [`DecisionRecord`] is written per decision (flow start: activity `1` open when the flow is
//! allowed or only detected, `5` refuse when it is blocked) and one per flow end (activity `2`
//! close). The records follow OCSF Network Activity (class `4001`, category `4`) with Bulkhead's
//! own fields added under plain names; they are typed structs serialised once, by the sink.
//!
//! Field map (see `docs/` for the full schema and its Elastic ECS mapping):
//!
//! | field | meaning |
//! |---|---|
//! | `time` | epoch milliseconds of the event (the decision, or the flow end) |
//! | `class_uid`, `category_uid`, `type_uid`, `activity_id` | OCSF classification; `type_uid = 400100 + activity_id` |
//! | `severity_id` | 1 informational (allowed), 2 low (detected), 3 medium (blocked), 4 high (an evasion attempt was blocked) |
//! | `action` | `Allowed` / `Denied`: what the policy says (the first matching rule, watch rules included) |
//! | `disposition` | `Allowed` / `Blocked` / `Detected` (log-only mode or a watch rule: nothing enforced) |
//! | `src_endpoint`, `dst_endpoint` | the client and the server; `dst_endpoint.hostname` is the name the decision used |
//! | `connection_info` | `protocol_name` (`tcp`, `udp`, `icmp`, ...), `direction` |
//! | `tls.sni` / `http.host` | the name found in the ClientHello or the HTTP request |
//! | `policy` | `name` (the rule, or `default`) and `version` |
//! | `src_groups`, `dst_groups` | SmartGroups of the source; WebGroups / address groups of the destination |
//! | `reason` | why: see [`Reason`] |
//! | `gateway_id` | the gateway that decided |
//! | `traffic`, `duration`, `start_time`, `end_time`, `end_reason` | flow end only |

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// OCSF class of every record: Network Activity.
pub const CLASS_UID: u32 = 4001;
/// OCSF category of every record: Network Activity.
pub const CATEGORY_UID: u32 = 4;
/// The OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// Why a flow got its verdict. Serialised in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A rule matched (the rule is in `policy.name`).
    Rule,
    /// No rule matched: the policy's default action.
    Default,
    /// The flow needed a name and the ClientHello had none (over TCP, or in QUIC Initials), or
    /// its UDP 443 datagrams are not QUIC Initials the gateway can read.
    NoSni,
    /// The flow needed a name and its first bytes are neither TLS nor HTTP.
    NotTls,
    /// The first bytes looked like TLS or HTTP but could not be parsed, or the name is invalid.
    ParseError,
    /// The name was still unknown when the inspection time ran out.
    InspectTimeout,
    /// The flow held more bytes than the per-flow bound before its name was known.
    InspectOverflow,
    /// The total of held bytes over all flows reached its bound.
    MemoryPressure,
    /// The flow table was full.
    FlowLimit,
    /// A new policy denies a flow the old one allowed.
    PolicyUpdate,
    /// The flow was first seen mid-stream (no SYN) and its verdict needs a name.
    Midstream,
    /// Overlapping TCP segments (or a retransmission of inspected bytes) disagree.
    AmbiguousOverlap,
    /// A fragment that cut a TCP/UDP header, or a fragmented TCP segment.
    FragmentedHeader,
    /// A segment to be inspected had a bad TCP checksum (it was dropped; the flow goes on).
    BadChecksum,
    /// A second ClientHello on the flow carries a name the policy denies.
    SecondHello,
    /// A later HTTP request on the flow names a Host the policy denies.
    HostChanged,
    /// The policy blocks QUIC (`quic = "block"`): refused so that the client falls back to TCP.
    QuicBlocked,
    /// The flow was permitted by its name, and the name does not resolve to the destination
    /// address (`sni_dns_check`): the client claimed a name it is not talking to.
    SniAddressMismatch,
    /// The name could not be resolved to check the destination address: the resolver failed,
    /// or the gateway refused to send one more query (its bounds).
    SniDnsFailure,
    /// No answer to the lookup of the name before the flow's inspection time ran out.
    SniDnsTimeout,
    /// Nothing could be asked: `bulkhead replay` had no answer for the name in the capture or
    /// the answer file.
    SniDnsUnverified,
    /// A reason this version does not know (forward compatibility when reading records).
    #[serde(other)]
    Unknown,
}

impl Reason {
    /// Every reason this build emits (all but `Unknown`), e.g. for metric label vocabularies.
    pub const KNOWN: [Reason; 21] = [
        Reason::Rule,
        Reason::Default,
        Reason::NoSni,
        Reason::NotTls,
        Reason::ParseError,
        Reason::InspectTimeout,
        Reason::InspectOverflow,
        Reason::MemoryPressure,
        Reason::FlowLimit,
        Reason::PolicyUpdate,
        Reason::Midstream,
        Reason::AmbiguousOverlap,
        Reason::FragmentedHeader,
        Reason::BadChecksum,
        Reason::SecondHello,
        Reason::HostChanged,
        Reason::QuicBlocked,
        Reason::SniAddressMismatch,
        Reason::SniDnsFailure,
        Reason::SniDnsTimeout,
        Reason::SniDnsUnverified,
    ];

    /// The `snake_case` name, as serialised and used as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Default => "default",
            Reason::NoSni => "no_sni",
            Reason::NotTls => "not_tls",
            Reason::ParseError => "parse_error",
            Reason::InspectTimeout => "inspect_timeout",
            Reason::InspectOverflow => "inspect_overflow",
            Reason::MemoryPressure => "memory_pressure",
            Reason::FlowLimit => "flow_limit",
            Reason::PolicyUpdate => "policy_update",
            Reason::Midstream => "midstream",
            Reason::AmbiguousOverlap => "ambiguous_overlap",
            Reason::FragmentedHeader => "fragmented_header",
            Reason::BadChecksum => "bad_checksum",
            Reason::SecondHello => "second_hello",
            Reason::HostChanged => "host_changed",
            Reason::QuicBlocked => "quic_blocked",
            Reason::SniAddressMismatch => "sni_address_mismatch",
            Reason::SniDnsFailure => "sni_dns_failure",
            Reason::SniDnsTimeout => "sni_dns_timeout",
            Reason::SniDnsUnverified => "sni_dns_unverified",
            Reason::Unknown => "unknown",
        }
    }

    /// Position in [`Reason::KNOWN`]; `KNOWN.len()` for `Unknown`. A dense index for tables
    /// (metric counters) with one slot per reason and one for anything else.
    pub const fn index(self) -> usize {
        // The variants are declared in `KNOWN` order with `Unknown` last; the assertion below
        // the impl holds the build to that.
        self as usize
    }

    /// True for the outcomes of the DNS check of a name (`sni_dns_check`).
    pub const fn is_dns_check(self) -> bool {
        matches!(
            self,
            Reason::SniAddressMismatch
                | Reason::SniDnsFailure
                | Reason::SniDnsTimeout
                | Reason::SniDnsUnverified
        )
    }

    /// True for reasons that mean a bound or a hostile pattern made the gateway fail closed,
    /// rather than a rule.
    pub const fn is_fail_closed(self) -> bool {
        !matches!(
            self,
            Reason::Rule | Reason::Default | Reason::NoSni | Reason::NotTls | Reason::QuicBlocked
        )
    }
}

// `Reason::index` relies on the declaration order matching `KNOWN`, with `Unknown` right after.
const _: () = {
    let mut i = 0;
    while i < Reason::KNOWN.len() {
        assert!(Reason::KNOWN[i] as usize == i);
        i += 1;
    }
    assert!(Reason::Unknown as usize == Reason::KNOWN.len());
};

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a flow ended (flow-end records only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Both sides sent a FIN.
    Fin,
    /// One side sent a RST.
    Rst,
    /// The gateway reset or blocked the flow.
    Cut,
    /// No packet for longer than the idle timeout of the flow's state.
    IdleTimeout,
    /// The flow table was full and this half-open flow (a SYN the server never answered) was
    /// evicted to make room for a new one.
    Evicted,
    /// The gateway stopped (or the capture ended) with the flow still open.
    Shutdown,
    /// A reason this version does not know.
    #[serde(other)]
    Unknown,
}

/// OCSF activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activity {
    /// 1: a flow was allowed (or only detected) and opened.
    Open,
    /// 2: a flow ended.
    Close,
    /// 5: a flow was refused.
    Refuse,
}

impl Activity {
    /// The OCSF `activity_id`.
    pub const fn id(self) -> u8 {
        match self {
            Activity::Open => 1,
            Activity::Close => 2,
            Activity::Refuse => 5,
        }
    }
}

/// What the policy says about the flow (OCSF `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordAction {
    /// `Allowed`, `action_id` 1.
    Allowed,
    /// `Denied`, `action_id` 2.
    Denied,
}

/// What the gateway did (OCSF `disposition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Disposition {
    /// `Allowed`, `disposition_id` 1.
    Allowed,
    /// `Blocked`, `disposition_id` 2.
    Blocked,
    /// `Detected`, `disposition_id` 15: log-only mode or a watch rule; nothing was enforced.
    Detected,
}

impl Disposition {
    /// The OCSF `disposition_id`.
    pub const fn id(self) -> u8 {
        match self {
            Disposition::Allowed => 1,
            Disposition::Blocked => 2,
            Disposition::Detected => 15,
        }
    }
}

/// OCSF `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The product that wrote the record.
    pub product: Product,
    /// The OCSF schema version.
    pub version: String,
}

/// OCSF `metadata.product`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// `Bulkhead`.
    pub name: String,
    /// `Bulkhead`.
    pub vendor_name: String,
    /// The gateway's version.
    pub version: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            product: Product {
                name: "Bulkhead".to_owned(),
                vendor_name: "Bulkhead".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            version: OCSF_VERSION.to_owned(),
        }
    }
}

/// OCSF `src_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrcEndpoint {
    /// The client address.
    pub ip: IpAddr,
    /// The client port (0 for transports without ports).
    pub port: u16,
}

/// OCSF `dst_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DstEndpoint {
    /// The server address.
    pub ip: IpAddr,
    /// The server port (0 for transports without ports).
    pub port: u16,
    /// The normalised name the decision used, when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// OCSF `connection_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// `tcp`, `udp`, `icmp`, `ipv6-icmp`, or the protocol number.
    pub protocol_name: String,
    /// The IP protocol number.
    pub protocol_num: u8,
    /// `Outbound`: the client is the workload side that opened the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// OCSF `direction_id` (2 outbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction_id: Option<u8>,
}

/// OCSF `tls` (only the fields the gateway can see without decrypting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tls {
    /// The server name from the ClientHello (the outer name under ECH).
    pub sni: String,
    /// True when the ClientHello carries Encrypted Client Hello: `sni` is then the outer name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ech: bool,
}

/// The HTTP request's Host (or CONNECT authority) that named the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http {
    /// The host, normalised, without the port.
    pub host: String,
}

/// What the DNS check of the name found (`sni_dns_check`), on records whose `reason` is one of
/// its outcomes, and on replayed records the check could not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCheck {
    /// The name the client sent (normalised), as checked.
    pub name: String,
    /// The destination address it was checked against.
    pub address: IpAddr,
    /// What the name resolves to (empty when it has no address or the lookup failed).
    pub resolved: Vec<IpAddr>,
    /// `mismatch`, `timeout`, `error`, `refused` or `unverified`.
    pub outcome: String,
    /// `enforce` (the flow was refused) or `log` (it was let through and recorded).
    pub mode: String,
}

/// The rule that decided and the policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The rule's name, or `default`.
    pub name: String,
    /// The policy version the decision was made under.
    pub version: u64,
}

/// Flow-end counters. `out` = client to server, `in` = server to client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Bytes (IP packet lengths) from the server to the client.
    pub bytes_in: u64,
    /// Bytes (IP packet lengths) from the client to the server.
    pub bytes_out: u64,
    /// Packets from the server to the client.
    pub packets_in: u64,
    /// Packets from the client to the server.
    pub packets_out: u64,
}

/// One line of the decision log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Epoch milliseconds of the event.
    pub time: u64,
    /// 4001.
    pub class_uid: u32,
    /// 4.
    pub category_uid: u32,
    /// `400100 + activity_id`.
    pub type_uid: u32,
    /// 1 open, 2 close, 5 refuse.
    pub activity_id: u8,
    /// 1 informational, 2 low, 3 medium, 4 high.
    pub severity_id: u8,
    /// Product and schema version.
    pub metadata: Metadata,
    /// `Allowed` / `Denied`.
    pub action: RecordAction,
    /// 1 allowed, 2 denied.
    pub action_id: u8,
    /// `Allowed` / `Blocked` / `Detected`.
    pub disposition: Disposition,
    /// 1, 2 or 15.
    pub disposition_id: u8,
    /// The client.
    pub src_endpoint: SrcEndpoint,
    /// The server.
    pub dst_endpoint: DstEndpoint,
    /// Transport and direction.
    pub connection_info: ConnectionInfo,
    /// The TLS server name, when the name came from a ClientHello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// The HTTP host, when the name came from an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    /// The rule and the policy version.
    pub policy: PolicyRef,
    /// SmartGroups of the source.
    pub src_groups: Vec<String>,
    /// WebGroups matching the name, address groups and SmartGroups containing the destination.
    pub dst_groups: Vec<String>,
    /// Why.
    pub reason: Reason,
    /// The gateway that decided.
    pub gateway_id: String,
    /// The DNS check of the name, when it did not confirm the destination address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_check: Option<DnsCheck>,
    /// Flow end: counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// Flow end: milliseconds from the first to the last packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// Flow end: epoch milliseconds of the first packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Flow end: epoch milliseconds of the last packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<u64>,
    /// Flow end: why the flow ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
}

impl DecisionRecord {
    /// The name the record carries (SNI or HTTP host), if any.
    pub fn name(&self) -> Option<&str> {
        self.tls
            .as_ref()
            .map(|t| t.sni.as_str())
            .or(self.http.as_ref().map(|h| h.host.as_str()))
    }

    /// True for a flow-end record.
    pub fn is_flow_end(&self) -> bool {
        self.activity_id == Activity::Close.id()
    }

    /// Serialises the record as one JSON line (without the newline).
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and integers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Where the pipeline's records go. The runtime implements it with a bounded queue to the log
/// writer; `replay` and the tests collect into a `Vec`.
pub trait RecordSink {
    /// Takes one record. Must not block the packet path: a full sink drops and counts.
    fn submit(&mut self, record: DecisionRecord);
}

impl RecordSink for Vec<DecisionRecord> {
    fn submit(&mut self, record: DecisionRecord) {
        self.push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DecisionRecord {
        DecisionRecord {
            time: 1_700_000_000_123,
            class_uid: CLASS_UID,
            category_uid: CATEGORY_UID,
            type_uid: 400_101,
            activity_id: 1,
            severity_id: 1,
            metadata: Metadata::default(),
            action: RecordAction::Allowed,
            action_id: 1,
            disposition: Disposition::Allowed,
            disposition_id: 1,
            src_endpoint: SrcEndpoint {
                ip: "10.1.2.3".parse().unwrap(),
                port: 40000,
            },
            dst_endpoint: DstEndpoint {
                ip: "192.0.2.1".parse().unwrap(),
                port: 443,
                hostname: Some("api.openai.com".into()),
            },
            connection_info: ConnectionInfo {
                protocol_name: "tcp".into(),
                protocol_num: 6,
                direction: Some("Outbound".into()),
                direction_id: Some(2),
            },
            tls: Some(Tls {
                sni: "api.openai.com".into(),
                ech: false,
            }),
            http: None,
            policy: PolicyRef {
                name: "prod-agents-to-openai".into(),
                version: 7,
            },
            src_groups: vec!["prod-agents".into()],
            dst_groups: vec!["openai".into()],
            reason: Reason::Rule,
            gateway_id: "gw-1".into(),
            dns_check: None,
            traffic: None,
            duration: None,
            start_time: None,
            end_time: None,
            end_reason: None,
        }
    }

    #[test]
    fn serialises_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["category_uid"], 4);
        assert_eq!(v["type_uid"], 400101);
        assert_eq!(v["action"], "Allowed");
        assert_eq!(v["disposition"], "Allowed");
        assert_eq!(v["src_endpoint"]["ip"], "10.1.2.3");
        assert_eq!(v["dst_endpoint"]["hostname"], "api.openai.com");
        assert_eq!(v["tls"]["sni"], "api.openai.com");
        assert!(v["tls"].get("ech").is_none());
        assert!(v.get("http").is_none());
        assert_eq!(v["policy"]["name"], "prod-agents-to-openai");
        assert_eq!(v["policy"]["version"], 7);
        assert_eq!(v["reason"], "rule");
        assert_eq!(v["metadata"]["product"]["name"], "Bulkhead");
        assert!(v.get("traffic").is_none());
    }

    #[test]
    fn round_trips_and_reads_unknown_reasons() {
        let r = sample();
        let back: DecisionRecord = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let text = r
            .to_json()
            .replace("\"reason\":\"rule\"", "\"reason\":\"from_the_future\"");
        let back: DecisionRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.reason, Reason::Unknown);
    }

    #[test]
    fn reason_names_match_serde() {
        for r in Reason::KNOWN {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
