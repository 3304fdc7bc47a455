//! The DNS check of names (`sni_dns_check`) in the pipeline, with the answers handed in as the
//! runtime's resolver would (`Pipeline::dns_answer`) or learned from DNS packets crossing the
//! pipeline. The end-to-end tests with a real resolver and the real daemon are in
//! `tests/tests/e2e_dns.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bulkhead_gateway::dns::{DnsAnswer, DnsFailure};
use bulkhead_gateway::pipeline::{Disposition, PipelineConfig};
use bulkhead_gateway::record::{Disposition as RecDisposition, Reason, RecordAction};
use bulkhead_testkit::*;

fn policy(check: &str, mode: &str) -> String {
    format!(
        r#"
[policy]
default_action = "deny"
mode = "{mode}"
sni_dns_check = "{check}"

[webgroups.openai]
domains = ["api.openai.com", "*.openai.com"]

[addressgroups.direct]
cidrs = ["198.51.100.0/24"]

[addressgroups.resolvers]
cidrs = ["10.9.0.0/24"]

[[rules]]
name = "to-openai"
priority = 10
src = ["any"]
dst = ["openai"]
protocol = "tcp"
ports = ["443", "80"]
action = "permit"

[[rules]]
name = "to-direct"
priority = 20
src = ["any"]
dst = ["direct"]
action = "permit"

[[rules]]
name = "dns"
priority = 30
src = ["any"]
dst = ["resolvers"]
protocol = "udp"
ports = ["53"]
action = "permit"
"#
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Conn::v4 talks to 192.0.2.10:443.
const SERVER: &str = "192.0.2.10";

fn hello(c: &Conn, name: &str) -> Vec<u8> {
    c.data(0, &client_hello(Some(name), 0))
}

fn take_queries(h: &mut Harness) -> Vec<String> {
    h.out
        .dns_queries
        .drain(..)
        .map(|n| n.into_string())
        .collect()
}

fn answer(h: &mut Harness, name: &str, a: DnsAnswer) {
    h.pipe.dns_answer(h.now, name, a, &mut h.out);
    for t in h.out.transmit.drain(..) {
        h.wire.push(t.packet);
    }
    h.records.append(&mut h.out.records);
}

fn carries(wire: &[Vec<u8>], payload: &[u8]) -> bool {
    wire.iter()
        .any(|p| p.windows(payload.len()).any(|w| w == payload))
}

#[test]
fn a_miss_holds_the_flow_until_the_answer_confirms_the_address() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    let c = Conn::v4(40000);
    handshake(&mut h, &c);
    h.take_wire();
    assert_eq!(h.send(&hello(&c, "api.openai.com")), Disposition::Held);
    assert_eq!(take_queries(&mut h), vec!["api.openai.com"]);
    assert!(h.take_wire().is_empty(), "nothing passes before the answer");
    answer(
        &mut h,
        "api.openai.com",
        DnsAnswer::Addresses(vec![ip(SERVER)]),
    );
    let wire = h.take_wire();
    assert!(carries(&wire, &client_hello(Some("api.openai.com"), 0)));
    assert!(rsts(&wire).is_empty());
    assert!(h.decisions().iter().all(|r| r.reason == Reason::Rule));
    assert_eq!(h.pipe.stats().dns_cache_misses, 1);
}

#[test]
fn a_mismatch_is_refused_with_the_name_the_address_and_the_answer() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    let c = Conn::v4(40001);
    handshake(&mut h, &c);
    h.take_wire();
    h.send(&hello(&c, "api.openai.com"));
    take_queries(&mut h);
    answer(
        &mut h,
        "api.openai.com",
        DnsAnswer::Addresses(vec![ip("203.0.113.5"), ip("2001:db8::5")]),
    );
    let wire = h.take_wire();
    assert!(!carries(&wire, &client_hello(Some("api.openai.com"), 0)));
    assert_eq!(rsts(&wire).len(), 2, "both ends are reset");
    let d = h.decisions();
    assert_eq!(d.len(), 1);
    let r = d[0];
    assert_eq!(r.reason, Reason::SniAddressMismatch);
    assert_eq!(r.action, RecordAction::Denied);
    assert_eq!(r.disposition, RecDisposition::Blocked);
    assert_eq!(r.policy.name, "to-openai");
    let check = r.dns_check.as_ref().expect("dns_check");
    assert_eq!(check.name, "api.openai.com");
    assert_eq!(check.address, ip(SERVER));
    assert_eq!(check.resolved, vec![ip("203.0.113.5"), ip("2001:db8::5")]);
    assert_eq!(check.outcome, "mismatch");
    assert_eq!(check.mode, "enforce");
    let json = r.to_json();
    assert!(
        json.contains("\"reason\":\"sni_address_mismatch\""),
        "{json}"
    );
    // Later client data is dropped.
    assert_ne!(
        h.send(&c.data(100, b"more")),
        Disposition::Forward,
        "a refused flow passes nothing"
    );
}

#[test]
fn a_cached_answer_decides_at_once_and_asks_nothing() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    let t = h.now;
    h.pipe
        .dns_cache()
        .insert("api.openai.com", &[(ip(SERVER), 60)], t);
    let c = Conn::v4(40002);
    handshake(&mut h, &c);
    h.take_wire();
    h.send(&hello(&c, "api.openai.com"));
    assert!(take_queries(&mut h).is_empty());
    assert!(carries(
        &h.take_wire(),
        &client_hello(Some("api.openai.com"), 0)
    ));
    assert_eq!(h.pipe.stats().dns_cache_hits, 1);
    // The same name to another address: refused from the cache, no lookup.
    let other = Conn {
        server: SocketAddr::new(ip("192.0.2.99"), 443),
        ..Conn::v4(40003)
    };
    handshake(&mut h, &other);
    h.take_wire();
    h.send(&hello(&other, "api.openai.com"));
    assert!(take_queries(&mut h).is_empty());
    assert_eq!(rsts(&h.take_wire()).len(), 2);
    let last = *h.decisions().last().unwrap();
    assert_eq!(last.reason, Reason::SniAddressMismatch);
    assert_eq!(last.dns_check.as_ref().unwrap().resolved, vec![ip(SERVER)]);
}

#[test]
fn ttl_expiry_asks_again() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    let t = h.now;
    h.pipe
        .dns_cache()
        .insert("api.openai.com", &[(ip(SERVER), 10)], t);
    h.advance(Duration::from_secs(11));
    let c = Conn::v4(40004);
    handshake(&mut h, &c);
    h.send(&hello(&c, "api.openai.com"));
    assert_eq!(take_queries(&mut h), vec!["api.openai.com"]);
}

#[test]
fn wildcards_check_the_name_the_client_sent() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    let c = Conn::v4(40005);
    handshake(&mut h, &c);
    h.send(&hello(&c, "Chat.OpenAI.com"));
    assert_eq!(take_queries(&mut h), vec!["chat.openai.com"]);
}

#[test]
fn permits_by_address_are_not_checked() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    // A name no WebGroup matches, to an address an AddressGroup permits.
    let c = Conn {
        server: SocketAddr::new(ip("198.51.100.7"), 443),
        ..Conn::v4(40006)
    };
    handshake(&mut h, &c);
    h.send(&hello(&c, "intranet.example"));
    assert!(take_queries(&mut h).is_empty());
    assert!(carries(
        &h.take_wire(),
        &client_hello(Some("intranet.example"), 0)
    ));
    // A rule that names both the WebGroup and an AddressGroup holding the address: the address
    // opened the way, no check.
    let both = policy("enforce", "enforce")
        .replace("dst = [\"openai\"]", "dst = [\"openai\", \"direct\"]");
    let mut h = Harness::new(&both);
    handshake(&mut h, &c);
    h.send(&hello(&c, "api.openai.com"));
    assert!(take_queries(&mut h).is_empty());
}

#[test]
fn off_checks_nothing() {
    let mut h = Harness::new(&policy("off", "enforce"));
    let c = Conn::v4(40007);
    handshake(&mut h, &c);
    h.take_wire();
    h.send(&hello(&c, "api.openai.com"));
    assert!(take_queries(&mut h).is_empty());
    assert!(carries(
        &h.take_wire(),
        &client_hello(Some("api.openai.com"), 0)
    ));
}

#[test]
fn a_failed_lookup_fails_closed_with_its_own_reason() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    let c = Conn::v4(40008);
    handshake(&mut h, &c);
    h.take_wire();
    h.send(&hello(&c, "api.openai.com"));
    take_queries(&mut h);
    answer(
        &mut h,
        "api.openai.com",
        DnsAnswer::Failed(DnsFailure::Error),
    );
    assert_eq!(rsts(&h.take_wire()).len(), 2);
    let r = *h.decisions().last().unwrap();
    assert_eq!(r.reason, Reason::SniDnsFailure);
    assert_eq!(r.disposition, RecDisposition::Blocked);
    assert_eq!(r.dns_check.as_ref().unwrap().outcome, "error");
    // NXDOMAIN (no address at all) is a mismatch: the name has no address this one could be.
    let c = Conn::v4(40009);
    handshake(&mut h, &c);
    h.send(&hello(&c, "gone.openai.com"));
    take_queries(&mut h);
    answer(&mut h, "gone.openai.com", DnsAnswer::Addresses(vec![]));
    assert_eq!(
        h.decisions().last().unwrap().reason,
        Reason::SniAddressMismatch
    );
}

#[test]
fn no_answer_before_the_inspection_deadline_is_a_dns_timeout() {
    let config = PipelineConfig {
        inspect_timeout: Duration::from_secs(2),
        ..PipelineConfig::default()
    };
    let mut h = Harness::with_config(&policy("enforce", "enforce"), config);
    let c = Conn::v4(40010);
    handshake(&mut h, &c);
    h.take_wire();
    h.send(&hello(&c, "api.openai.com"));
    take_queries(&mut h);
    h.advance(Duration::from_secs(3));
    assert_eq!(rsts(&h.take_wire()).len(), 2);
    let r = *h.decisions().last().unwrap();
    assert_eq!(r.reason, Reason::SniDnsTimeout);
    assert_eq!(r.dst_endpoint.hostname.as_deref(), Some("api.openai.com"));
    assert_eq!(r.dns_check.as_ref().unwrap().outcome, "timeout");
    // A late answer changes nothing.
    answer(
        &mut h,
        "api.openai.com",
        DnsAnswer::Addresses(vec![ip(SERVER)]),
    );
    assert!(h.take_wire().is_empty());
    assert_eq!(h.pipe.stats().held_bytes_now, 0);
}

#[test]
fn log_mode_never_waits_and_records_a_mismatch_as_detected() {
    let mut h = Harness::new(&policy("log", "enforce"));
    let c = Conn::v4(40011);
    handshake(&mut h, &c);
    h.take_wire();
    assert_eq!(h.send(&hello(&c, "api.openai.com")), Disposition::Held);
    // Released at once: nothing waits for the lookup.
    assert!(carries(
        &h.take_wire(),
        &client_hello(Some("api.openai.com"), 0)
    ));
    assert_eq!(take_queries(&mut h), vec!["api.openai.com"]);
    let before = h.decisions().len();
    answer(
        &mut h,
        "api.openai.com",
        DnsAnswer::Addresses(vec![ip("203.0.113.5")]),
    );
    let d = h.decisions();
    assert_eq!(d.len(), before + 1);
    let r = *d.last().unwrap();
    assert_eq!(r.reason, Reason::SniAddressMismatch);
    assert_eq!(r.disposition, RecDisposition::Detected);
    assert_eq!(r.action, RecordAction::Denied);
    assert_eq!(r.dns_check.as_ref().unwrap().mode, "log");
    // The flow goes on.
    assert_eq!(h.send(&c.data(1000, b"x")), Disposition::Forward);
    // A matching answer for another flow adds no record.
    let c2 = Conn::v4(40012);
    handshake(&mut h, &c2);
    h.send(&hello(&c2, "chat.openai.com"));
    let n = h.decisions().len();
    take_queries(&mut h);
    answer(
        &mut h,
        "chat.openai.com",
        DnsAnswer::Addresses(vec![ip(SERVER)]),
    );
    assert_eq!(h.decisions().len(), n);
}

#[test]
fn log_mode_with_a_cached_mismatch_records_it_at_the_verdict() {
    let mut h = Harness::new(&policy("log", "enforce"));
    let t = h.now;
    h.pipe
        .dns_cache()
        .insert("api.openai.com", &[(ip("203.0.113.5"), 60)], t);
    let c = Conn::v4(40013);
    handshake(&mut h, &c);
    h.take_wire();
    h.send(&hello(&c, "api.openai.com"));
    assert!(carries(
        &h.take_wire(),
        &client_hello(Some("api.openai.com"), 0)
    ));
    let r = *h.decisions().last().unwrap();
    assert_eq!(r.reason, Reason::SniAddressMismatch);
    assert_eq!(r.disposition, RecDisposition::Detected);
}

#[test]
fn log_only_mode_never_enforces_the_check() {
    let mut h = Harness::new(&policy("enforce", "log-only"));
    let t = h.now;
    h.pipe
        .dns_cache()
        .insert("api.openai.com", &[(ip("203.0.113.5"), 60)], t);
    let c = Conn::v4(40014);
    assert_eq!(h.send(&c.syn()), Disposition::Forward);
    h.send(&c.synack());
    h.send(&c.ack());
    h.take_wire();
    h.send(&hello(&c, "api.openai.com"));
    assert!(rsts(&h.take_wire()).is_empty());
}

#[test]
fn http_host_permits_are_checked_too() {
    let mut h = Harness::new(&policy("enforce", "enforce"));
    let c = Conn::v4(40015).to_port(80);
    handshake(&mut h, &c);
    h.send(&c.data(0, b"GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"));
    assert_eq!(take_queries(&mut h), vec!["api.openai.com"]);
    answer(
        &mut h,
        "api.openai.com",
        DnsAnswer::Addresses(vec![ip("203.0.113.5")]),
    );
    let r = *h.decisions().last().unwrap();
    assert_eq!(r.reason, Reason::SniAddressMismatch);
    assert_eq!(r.http.as_ref().unwrap().host, "api.openai.com");
}

#[test]
fn a_flood_of_names_stays_within_the_bound_and_fails_closed() {
    let mut config = PipelineConfig::default();
    config.dns.max_waiting_names = 4;
    let mut h = Harness::with_config(&policy("enforce", "enforce"), config);
    let mut asked = 0;
    for i in 0..20u16 {
        let c = Conn::v4(41000 + i);
        handshake(&mut h, &c);
        h.send(&hello(&c, &format!("n{i}.openai.com")));
        asked += take_queries(&mut h).len();
    }
    assert_eq!(asked, 4);
    assert_eq!(h.pipe.dns_waiting(), 4);
    let refused: Vec<_> = h
        .decisions()
        .into_iter()
        .filter(|r| r.reason == Reason::SniDnsFailure)
        .collect();
    assert_eq!(refused.len(), 16);
    assert!(refused
        .iter()
        .all(|r| r.dns_check.as_ref().unwrap().outcome == "refused"));
    assert_eq!(h.pipe.stats().dns_queries_refused, 16);
}

#[test]
fn offline_an_unknown_name_is_unverified() {
    let mut config = PipelineConfig::default();
    config.dns.offline = true;
    let mut h = Harness::with_config(&policy("enforce", "enforce"), config.clone());
    let c = Conn::v4(40016);
    handshake(&mut h, &c);
    h.send(&hello(&c, "api.openai.com"));
    assert!(take_queries(&mut h).is_empty());
    let r = *h.decisions().last().unwrap();
    assert_eq!(r.reason, Reason::SniDnsUnverified);
    assert_eq!(r.disposition, RecDisposition::Blocked);
    // Under log the verdict stands and the record notes it.
    let mut h = Harness::with_config(&policy("log", "enforce"), config);
    handshake(&mut h, &c);
    h.send(&hello(&c, "api.openai.com"));
    let recorded: Vec<_> = h
        .decisions()
        .into_iter()
        .filter(|r| r.dns_check.is_some())
        .collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].reason, Reason::Rule);
    assert_eq!(
        recorded[0].dns_check.as_ref().unwrap().outcome,
        "unverified"
    );
}

mod learning {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::str::FromStr;

    const CLIENT: &str = "10.1.2.3:53000";
    const RESOLVER: &str = "10.9.0.2:53";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn response(id: u16, name: &str, addr: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_response_code(ResponseCode::NoError)
            .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A))
            .add_answer(Record::from_rdata(
                Name::from_str(name).unwrap(),
                120,
                RData::A(A(addr.parse().unwrap())),
            ));
        m.to_vec().unwrap()
    }

    fn learning_harness() -> Harness {
        let mut config = PipelineConfig::default();
        config.dns.learn_from = vec![sa(RESOLVER).ip()];
        Harness::with_config(&policy("enforce", "enforce"), config)
    }

    #[test]
    fn an_answer_to_a_query_the_gateway_saw_is_learned_and_used() {
        let mut h = learning_harness();
        let q = udp_packet(sa(CLIENT), sa(RESOLVER), &query(77, "api.openai.com."));
        assert_eq!(h.send(&q), Disposition::Forward);
        let r = udp_packet(
            sa(RESOLVER),
            sa(CLIENT),
            &response(77, "api.openai.com.", SERVER),
        );
        assert_eq!(h.send(&r), Disposition::Forward);
        assert_eq!(h.pipe.stats().dns_learned, 1);
        let c = Conn::v4(40020);
        handshake(&mut h, &c);
        h.take_wire();
        h.send(&hello(&c, "api.openai.com"));
        assert!(
            take_queries(&mut h).is_empty(),
            "answered from what was learned"
        );
        assert!(carries(
            &h.take_wire(),
            &client_hello(Some("api.openai.com"), 0)
        ));
    }

    #[test]
    fn an_unsolicited_or_untrusted_answer_teaches_nothing() {
        let mut h = learning_harness();
        // A query the gateway saw, then a forged answer with another id naming the
        // attacker's address.
        h.send(&udp_packet(
            sa(CLIENT),
            sa(RESOLVER),
            &query(4, "api.openai.com."),
        ));
        let forged = udp_packet(
            sa(RESOLVER),
            sa(CLIENT),
            &response(5, "api.openai.com.", "192.0.2.10"),
        );
        h.send(&forged);
        // A query to a resolver that is not trusted, and its answer.
        let rogue = sa("10.9.0.66:53");
        h.send(&udp_packet(sa(CLIENT), rogue, &query(6, "api.openai.com.")));
        h.send(&udp_packet(
            rogue,
            sa(CLIENT),
            &response(6, "api.openai.com.", "192.0.2.10"),
        ));
        assert_eq!(h.pipe.stats().dns_learned, 0);
        let c = Conn::v4(40021);
        handshake(&mut h, &c);
        h.send(&hello(&c, "api.openai.com"));
        assert_eq!(take_queries(&mut h), vec!["api.openai.com"]);
        let s = h.pipe.dns_observer_stats();
        assert_eq!(s.unsolicited, 1);
        assert_eq!(s.untrusted, 2);
    }
}

/// `bulkhead replay` and the check, on a capture recorded in a namespace lab
/// (`testdata/record_dns.sh`): the workload resolves api.openai.com (10.98.0.2) through a
/// resolver on the far side, connects there, sends the same hello to 10.98.0.3, then names
/// api.anthropic.com, which it never resolved.
mod replay {
    use super::*;
    use bulkhead_gateway::cli::replay::{read_dns_answers, replay_with, ReplayOptions};
    use bulkhead_gateway::record::DecisionRecord;
    use std::path::PathBuf;

    const REPLAY_POLICY: &str = r#"
[policy]
default_action = "deny"
sni_dns_check = "enforce"

[webgroups.ai]
domains = ["api.openai.com", "api.anthropic.com"]

[addressgroups.resolver]
cidrs = ["10.98.0.2/32"]

[[rules]]
name = "to-ai"
priority = 10
src = ["any"]
dst = ["ai"]
protocol = "tcp"
ports = ["443"]
action = "permit"

[[rules]]
name = "dns"
priority = 20
src = ["any"]
dst = ["resolver"]
protocol = "udp"
ports = ["53"]
action = "permit"
"#;

    fn capture() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/dns/sni_spoof_v4.pcap"
        ))
    }

    fn run(opts: &ReplayOptions) -> Vec<DecisionRecord> {
        let policy = bulkhead_testkit::policy(REPLAY_POLICY, 1);
        replay_with(policy, &[capture()], opts)
            .expect("replay")
            .records
            .into_iter()
            .filter(|r| r.connection_info.protocol_name == "tcp")
            .collect()
    }

    fn reasons(records: &[DecisionRecord]) -> Vec<(String, String, Reason)> {
        records
            .iter()
            .map(|r| {
                (
                    r.dst_endpoint.ip.to_string(),
                    r.name().unwrap_or("-").to_owned(),
                    r.reason,
                )
            })
            .collect()
    }

    #[test]
    fn answers_in_the_capture_confirm_and_refute() {
        let records = run(&ReplayOptions {
            gateway_id: "replay".into(),
            ..ReplayOptions::default()
        });
        assert_eq!(
            reasons(&records),
            vec![
                ("10.98.0.2".into(), "api.openai.com".into(), Reason::Rule),
                (
                    "10.98.0.3".into(),
                    "api.openai.com".into(),
                    Reason::SniAddressMismatch
                ),
                (
                    "10.98.0.3".into(),
                    "api.anthropic.com".into(),
                    Reason::SniDnsUnverified
                ),
            ]
        );
        let mismatch = &records[1];
        assert_eq!(mismatch.disposition, RecDisposition::Blocked);
        assert_eq!(
            mismatch.dns_check.as_ref().unwrap().resolved,
            vec![ip("10.98.0.2")]
        );
    }

    #[test]
    fn an_answer_file_confirms_what_the_capture_does_not_hold() {
        let answers = read_dns_answers(
            "# the address api.anthropic.com had at the time\napi.anthropic.com 10.98.0.3\n",
        )
        .unwrap();
        let records = run(&ReplayOptions {
            gateway_id: "replay".into(),
            dns_answers: answers,
            ..ReplayOptions::default()
        });
        assert_eq!(records[2].reason, Reason::Rule);
        assert_eq!(records[1].reason, Reason::SniAddressMismatch);
        assert!(read_dns_answers("api.openai.com not-an-address\n").is_err());
        assert!(read_dns_answers("bad..name 10.0.0.1\n").is_err());
    }

    #[test]
    fn answers_from_a_resolver_not_trusted_are_not_learned() {
        let records = run(&ReplayOptions {
            gateway_id: "replay".into(),
            dns_learn_from: vec![ip("10.98.0.99")],
            ..ReplayOptions::default()
        });
        assert!(records.iter().all(|r| r.reason == Reason::SniDnsUnverified));
    }
}

/// QUIC flows permitted by name: decided where the Initials are read, which cannot wait for a
/// lookup. A cached answer decides them; a name the cache does not know is refused under
/// `enforce` (ICMP port unreachable: the client falls back to TCP) while its lookup is asked.
mod quic {
    use super::*;
    use bulkhead_gateway::inspect::quic::build::{client_initial, crypto_frame, InitialSpec};
    use bulkhead_gateway::inspect::quic::Version;
    use bulkhead_testkit::tls::handshake_bytes;

    fn initial(name: &str) -> Vec<u8> {
        let hs = handshake_bytes(&client_hello(Some(name), 300));
        let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
        let spec = InitialSpec {
            version: Version::from_wire(1),
            key_dcid: &dcid,
            dcid: &dcid,
            scid: &[1, 2, 3, 4],
            token: &[],
            pn: 0,
        };
        client_initial(&spec, &crypto_frame(0, &hs), 1200).expect("v1 Initial")
    }

    fn quic_policy() -> String {
        policy("enforce", "enforce").replace("protocol = \"tcp\"", "protocol = \"udp\"")
    }

    fn datagram(name: &str) -> Vec<u8> {
        udp_packet(
            "10.1.2.3:51000".parse().unwrap(),
            SocketAddr::new(ip(SERVER), 443),
            &initial(name),
        )
    }

    #[test]
    fn a_cached_name_passes_and_a_spoofed_address_is_refused() {
        let mut h = Harness::new(&quic_policy());
        let t = h.now;
        h.pipe
            .dns_cache()
            .insert("api.openai.com", &[(ip(SERVER), 60)], t);
        assert_eq!(h.send(&datagram("api.openai.com")), Disposition::Held);
        assert!(!h.take_wire().is_empty(), "released");
        // Another client port, another address for the name in the cache: refused.
        let t = h.now;
        h.pipe
            .dns_cache()
            .insert("chat.openai.com", &[(ip("203.0.113.5"), 60)], t);
        let d = udp_packet(
            "10.1.2.3:51001".parse().unwrap(),
            SocketAddr::new(ip(SERVER), 443),
            &initial("chat.openai.com"),
        );
        assert_ne!(h.send(&d), Disposition::Forward);
        let r = *h.decisions().last().unwrap();
        assert_eq!(r.reason, Reason::SniAddressMismatch);
        assert_eq!(r.tls.as_ref().unwrap().sni, "chat.openai.com");
    }

    #[test]
    fn an_unknown_name_is_refused_and_looked_up() {
        let mut h = Harness::new(&quic_policy());
        assert_ne!(h.send(&datagram("api.openai.com")), Disposition::Forward);
        assert_eq!(take_queries(&mut h), vec!["api.openai.com"]);
        let r = *h.decisions().last().unwrap();
        assert_eq!(r.reason, Reason::SniDnsFailure);
        assert_eq!(r.dns_check.as_ref().unwrap().outcome, "not_cached");
        // The answer fills nothing by itself (the runtime stores it); once cached, the next
        // connection passes.
        answer(
            &mut h,
            "api.openai.com",
            DnsAnswer::Addresses(vec![ip(SERVER)]),
        );
        let t = h.now;
        h.pipe
            .dns_cache()
            .insert("api.openai.com", &[(ip(SERVER), 60)], t);
        h.take_wire();
        let again = udp_packet(
            "10.1.2.3:51002".parse().unwrap(),
            SocketAddr::new(ip(SERVER), 443),
            &initial("api.openai.com"),
        );
        h.send(&again);
        assert!(!h.take_wire().is_empty(), "released");
    }
}
