//! The controller <-> gateway protocol (`bulkhead.control.v1`).
//!
//! The contract lives in `proto/bulkhead/control/v1/control.proto`; this crate only exposes the
//! code that `build.rs` generates from it (messages with prost, client and server with tonic).
//! Conversion between these wire types and the policy model lives in [`convert`], used by both
//! edges (the gateway and the controller), never in `policy-engine`, which knows nothing of
//! protobuf.
#![forbid(unsafe_code)]

pub mod convert;

/// Generated code for package `bulkhead.control.v1`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("bulkhead.control.v1");
}

#[cfg(test)]
mod tests {
    use super::v1::{gateway_message, Ack, GatewayMessage, Policy, Rule, Snapshot};
    use prost::Message;

    #[test]
    fn snapshot_round_trips_through_the_wire_encoding() {
        let snapshot = Snapshot {
            version: 7,
            nonce: "n-1".into(),
            policy: Some(Policy {
                default_action: super::v1::Action::Deny as i32,
                rules: vec![Rule {
                    name: "prod-to-bedrock".into(),
                    priority: 100,
                    src: vec!["prod".into()],
                    dst: vec!["bedrock".into()],
                    action: super::v1::Action::Permit as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            digest: "sha256:00".into(),
        };
        let bytes = snapshot.encode_to_vec();
        let decoded = Snapshot::decode(bytes.as_slice()).expect("decode");
        assert_eq!(decoded, snapshot);
    }

    const POLICY: &str = r#"
[policy]
default_action = "deny"
mode = "log-only"
sni_dns_check = "enforce"

[smartgroups.prod]
cidrs = ["10.1.0.0/16", "fd00:1::/64"]

[webgroups.openai]
domains = ["api.openai.com", "*.openai.com"]

[addressgroups.c2]
cidrs = ["203.0.113.7/32"]

[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod"]
dst = ["openai", "prod"]
protocol = "tcp"
ports = ["443", "8443-8445"]
action = "permit"
log = true

[[rules]]
name = "block-c2"
priority = 200
src = "any"
dst = ["c2"]
action = "reject"
watch = true
"#;

    #[test]
    fn a_policy_survives_the_wire_unchanged() {
        let loaded =
            policy_engine::load_policy_str(POLICY, std::path::Path::new("p.toml")).unwrap();
        let wire = crate::convert::policy_to_proto(&loaded.policy);
        let back = crate::convert::policy_from_proto(&wire).unwrap();
        let mut expected = loaded.policy.clone();
        for group in &mut expected.smartgroups {
            group.selectors.clear();
            group.description = None;
        }
        for group in &mut expected.webgroups {
            group.description = None;
        }
        for group in &mut expected.addressgroups {
            group.description = None;
        }
        for rule in &mut expected.rules {
            rule.description = None;
        }
        assert_eq!(back, expected);
    }

    #[test]
    fn a_hostile_wire_policy_reports_every_error() {
        let loaded =
            policy_engine::load_policy_str(POLICY, std::path::Path::new("p.toml")).unwrap();
        let mut wire = crate::convert::policy_to_proto(&loaded.policy);
        wire.mode = 99;
        wire.smartgroups[0].cidrs.push("10.0.0.300/8".into());
        wire.webgroups[0].domains.push("*.com".into());
        wire.rules[0].dst.push("nowhere".into());
        wire.rules[0].ports.push(super::v1::PortRange {
            first: 1,
            last: 70000,
        });
        wire.rules[1].priority = 1;
        let errors = crate::convert::policy_from_proto(&wire).unwrap_err().0;
        let all = errors.join("\n");
        for expected in [
            "mode: 99",
            "`10.0.0.300/8` is not a CIDR",
            "`*.com`",
            "dst `nowhere` is no group",
            "port range 1-70000",
            "strictly increasing priority",
        ] {
            assert!(all.contains(expected), "{expected} missing from {all}");
        }
    }

    #[test]
    fn digests_name_the_content() {
        let a = crate::convert::digest(b"a");
        assert!(a.starts_with("sha256:") && a.len() == 71, "{a}");
        assert_ne!(a, crate::convert::digest(b"b"));
    }

    #[test]
    fn truncated_message_is_an_error_not_a_panic() {
        let message = GatewayMessage {
            message: Some(gateway_message::Message::Ack(Ack {
                version: 3,
                nonce: "abc".into(),
            })),
        };
        let bytes = message.encode_to_vec();
        for cut in 1..bytes.len() {
            assert!(
                GatewayMessage::decode(&bytes[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
    }
}
