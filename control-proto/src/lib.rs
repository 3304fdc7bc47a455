//! The controller <-> gateway protocol (`bulkhead.control.v1`).
//!
//! The contract lives in `proto/bulkhead/control/v1/control.proto`; this crate only exposes the
//! code that `build.rs` generates from it (messages with prost, client and server with tonic).
//! Conversion between these wire types and the policy model happens at the edges (the gateway
//! and the controller), never in `policy-engine`, which knows nothing of protobuf.
#![forbid(unsafe_code)]

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
        };
        let bytes = snapshot.encode_to_vec();
        let decoded = Snapshot::decode(bytes.as_slice()).expect("decode");
        assert_eq!(decoded, snapshot);
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
