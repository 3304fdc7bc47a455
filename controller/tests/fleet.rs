//! The controller with several gateways over real sockets and mutual TLS.

mod common;

use common::{bundle, eventually, inventory, Lab, POLICY};
use control_proto::v1::controller_message::Message as In;
use control_proto::v1::gateway_message::Message as Out;
use control_proto::v1::{
    DecisionBatch, GatewayMessage, HistoryRequest, PushRequest, ReportRequest, RollbackRequest,
    StatusRequest,
};
use tonic::Code;

async fn push(lab: &Lab, text: &str) -> control_proto::v1::PushReply {
    lab.operator()
        .await
        .push(PushRequest {
            policy: Some(bundle(text)),
            inventory: None,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn status(lab: &Lab) -> control_proto::v1::StatusReply {
    lab.operator()
        .await
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_push_reaches_every_gateway_and_each_acks() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), false, false).await;
    let gateways: Vec<_> = ["g1", "g2", "g3"]
        .iter()
        .map(|id| lab.gateway(id, None))
        .collect();
    // A raw stream that never reads: it must not hold back the others.
    let (_stalled_tx, _stalled_rx) = lab.raw_gateway("g4", "g4").await.unwrap();
    eventually("four gateways connected", || async {
        status(&lab)
            .await
            .gateways
            .iter()
            .filter(|g| g.connected)
            .count()
            == 4
    })
    .await;
    for round in 1..=3u64 {
        let text = POLICY.replace("priority = 100", &format!("priority = {}", 100 + round));
        let reply = push(&lab, &text).await;
        assert!(reply.errors.is_empty(), "{:?}", reply.errors);
        assert_eq!(reply.version, round);
    }
    eventually("g1..g3 acked version 3", || async {
        let s = status(&lab).await;
        s.version == 3
            && s.gateways.iter().filter(|g| g.id != "g4").all(|g| {
                g.state == "acked" && g.enforced_version == 3 && g.build_version == "1.2.3"
            })
    })
    .await;
    for gateway in &gateways {
        let applied = gateway.applied.lock().unwrap();
        assert_eq!(applied.last().unwrap().version, 3);
        assert_eq!(applied.last().unwrap().compiled.version(), 3);
        let lkg = bulkhead_gateway::control::load_last_known_good(&gateway.state_dir)
            .unwrap()
            .unwrap();
        assert_eq!(lkg.version, 3);
    }
    let g4 = status(&lab)
        .await
        .gateways
        .into_iter()
        .find(|g| g.id == "g4")
        .unwrap();
    assert_eq!(g4.state, "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_snapshot_shows_its_errors_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), false, false).await;
    let _good = lab.gateway("good", None);
    let _bad = lab.gateway("bad", Some("the TUN device is gone"));
    assert_eq!(push(&lab, POLICY).await.version, 1);
    eventually("good acked, bad nacked", || async {
        let s = status(&lab).await;
        let state = |id: &str| s.gateways.iter().find(|g| g.id == id).cloned();
        matches!(state("good"), Some(g) if g.state == "acked")
            && matches!(state("bad"), Some(g) if g.state == "nacked"
                && g.enforced_version == 0
                && g.errors.iter().any(|e| e.contains("the TUN device is gone")))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_versions_history_and_rollback_targets() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), false, false).await;
    let first = push(&lab, POLICY).await;
    let second = push(&lab, &POLICY.replace("api.openai.com", "api2.openai.com")).await;
    assert_eq!((first.version, second.version), (1, 2));
    lab.restart().await;
    assert_eq!(status(&lab).await.version, 2);
    let gateway = lab.gateway("g1", None);
    eventually("the restarted controller serves version 2", || async {
        gateway
            .applied
            .lock()
            .unwrap()
            .last()
            .is_some_and(|u| u.version == 2)
    })
    .await;
    let mut operator = lab.operator().await;
    let rolled = operator
        .rollback(RollbackRequest { version: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rolled.version, 3);
    assert_eq!(rolled.digest, first.digest);
    eventually("the rollback reaches the gateway", || async {
        gateway.applied.lock().unwrap().last().is_some_and(|u| {
            u.version == 3 && u.policy.webgroups[0].patterns[0].as_str() == "api.openai.com"
        })
    })
    .await;
    let history = operator
        .history(HistoryRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .versions;
    let summary: Vec<(u64, &str, &str)> = history
        .iter()
        .map(|v| (v.version, v.origin.as_str(), v.operator.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (3, "rollback", "alice"),
            (2, "push", "alice"),
            (1, "push", "alice")
        ]
    );
    let missing = operator
        .rollback(RollbackRequest { version: 99 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refusals_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), false, false).await;

    // No client certificate: the handshake or the first call fails.
    let refused = match lab.channel(lab.pki.ca(), None, "127.0.0.1").await {
        Err(_) => true,
        Ok(channel) => control_proto::v1::operator_client::OperatorClient::new(channel)
            .status(StatusRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");

    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    let other_pki = common::Pki::new(other.path());
    let refused = match lab
        .channel(
            lab.pki.ca(),
            Some(other_pki.pair("operator-alice")),
            "127.0.0.1",
        )
        .await
    {
        Err(_) => true,
        Ok(channel) => control_proto::v1::operator_client::OperatorClient::new(channel)
            .status(StatusRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA was served");

    // The controller's certificate does not name the host dialed.
    let wrong = lab
        .channel(
            lab.pki.ca(),
            Some(lab.pki.pair("operator-alice")),
            "controller.example",
        )
        .await;
    let refused = match wrong {
        Err(_) => true,
        Ok(channel) => control_proto::v1::operator_client::OperatorClient::new(channel)
            .status(StatusRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a controller certificate for another name was accepted"
    );

    // A gateway certificate claiming another gateway id.
    let err = lab.raw_gateway("g1", "g2").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("certificate is for gateway `g1`"),
        "{}",
        err.message()
    );

    // A gateway certificate on the operator API.
    let channel = lab
        .channel(lab.pki.ca(), Some(lab.pki.gateway("g1")), "127.0.0.1")
        .await
        .unwrap();
    let err = control_proto::v1::operator_client::OperatorClient::new(channel)
        .push(PushRequest {
            policy: Some(bundle(POLICY)),
            inventory: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err
        .message()
        .contains("gateway `g1` may not call the operator API"));

    // An operator certificate opening a gateway stream.
    let channel = lab
        .channel(
            lab.pki.ca(),
            Some(lab.pki.pair("operator-alice")),
            "127.0.0.1",
        )
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(GatewayMessage {
        message: Some(Out::Hello(control_proto::v1::Hello {
            gateway_id: "alice".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let err = control_proto::v1::policy_distribution_client::PolicyDistributionClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Nothing was served by any of it.
    assert_eq!(status(&lab).await.version, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_change_moves_an_address_between_smartgroups() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("inventory.toml"),
        inventory("10.1.2.3", "10.2.0.5"),
    )
    .unwrap();
    let lab = Lab::start(dir.path(), true, true).await;
    let gateway = lab.gateway("g1", None);
    let members = |group: &str| {
        let applied = gateway.applied.lock().unwrap();
        let policy = &applied.last().unwrap().policy;
        let group = policy.smartgroups.iter().find(|g| g.name == group).unwrap();
        group
            .cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    eventually("version 1 applied", || async {
        gateway
            .applied
            .lock()
            .unwrap()
            .last()
            .is_some_and(|u| u.version == 1)
    })
    .await;
    assert_eq!(members("prod-agents"), ["10.9.0.0/16", "10.1.2.3/32"]);
    assert_eq!(members("dev-agents"), ["10.2.0.5/32"]);

    // agent-a moves to dev: no policy edit, a new version.
    std::fs::write(
        dir.path().join("inventory.toml"),
        inventory("10.2.0.6", "10.1.2.3"),
    )
    .unwrap();
    eventually("version 2 applied", || async {
        gateway
            .applied
            .lock()
            .unwrap()
            .last()
            .is_some_and(|u| u.version == 2)
    })
    .await;
    assert_eq!(members("prod-agents"), ["10.9.0.0/16", "10.2.0.6/32"]);
    assert_eq!(members("dev-agents"), ["10.1.2.3/32"]);

    // A broken inventory is reported and serves nothing.
    std::fs::write(
        dir.path().join("inventory.toml"),
        "[[workloads]]\nname = 1\n",
    )
    .unwrap();
    eventually("the broken inventory is in status", || async {
        status(&lab)
            .await
            .errors
            .iter()
            .any(|e| e.contains("inventory.toml"))
    })
    .await;
    // A broken policy too.
    std::fs::write(
        dir.path().join("policy.toml"),
        "[policy]\ndefault_action = \"maybe\"\n",
    )
    .unwrap();
    eventually("the broken policy is in status", || async {
        status(&lab)
            .await
            .errors
            .iter()
            .any(|e| e.contains("default_action"))
    })
    .await;
    assert_eq!(status(&lab).await.version, 2);
}

fn record(
    activity: u8,
    disposition: &str,
    src: &str,
    src_groups: &str,
    sni: &str,
    dst_groups: &str,
    bytes: u64,
) -> String {
    format!(
        r#"{{"time":{},"activity_id":{activity},"disposition":"{disposition}","src_endpoint":{{"ip":"{src}","port":40000}},"dst_endpoint":{{"ip":"192.0.2.1","port":443}},"tls":{{"sni":"{sni}"}},"src_groups":{src_groups},"dst_groups":{dst_groups},"traffic":{{"bytes_in":{bytes},"bytes_out":{bytes},"packets_in":1,"packets_out":1}},"gateway_id":"g1"}}"#,
        bulkhead_controller::config::now_ms()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_aggregates_submitted_records() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), false, false).await;
    let (tx, _inbound) = lab.raw_gateway("g1", "g1").await.unwrap();
    let records = vec![
        record(
            1,
            "Allowed",
            "10.1.2.3",
            r#"["prod"]"#,
            "api.openai.com",
            r#"["openai"]"#,
            0,
        ),
        record(
            2,
            "Allowed",
            "10.1.2.3",
            r#"["prod"]"#,
            "api.openai.com",
            r#"["openai"]"#,
            1000,
        ),
        record(
            1,
            "Detected",
            "10.1.2.3",
            r#"["prod"]"#,
            "api.openai.com",
            r#"["openai"]"#,
            0,
        ),
        record(5, "Blocked", "10.7.7.7", "[]", "evil.example", "[]", 0),
        record(5, "Blocked", "10.7.7.7", "[]", "evil.example", "[]", 0),
        record(5, "Blocked", "10.7.7.7", "[]", "evil.example", "[]", 0),
        "not json at all".to_string(),
    ];
    tx.send(GatewayMessage {
        message: Some(Out::Decisions(DecisionBatch {
            records_json: records,
            dropped: 0,
        })),
    })
    .await
    .unwrap();
    let mut operator = lab.operator().await;
    let mut rows = Vec::new();
    eventually("records stored", || {
        let mut operator = operator.clone();
        async move {
            let reply = operator
                .report(ReportRequest {
                    since_seconds: 3600,
                })
                .await
                .unwrap();
            reply.into_inner().rows.len() == 2
        }
    })
    .await;
    rows.extend(
        operator
            .report(ReportRequest {
                since_seconds: 3600,
            })
            .await
            .unwrap()
            .into_inner()
            .rows,
    );
    // AI providers first, although the other row has more flows.
    assert_eq!(rows[0].src_group, "prod");
    assert_eq!(rows[0].dst_group, "openai");
    assert_eq!(
        (rows[0].flows, rows[0].allowed, rows[0].detected),
        (2, 1, 1)
    );
    assert_eq!((rows[0].bytes_in, rows[0].bytes_out), (1000, 1000));
    assert_eq!(rows[1].src_ip, "10.7.7.7");
    assert_eq!(rows[1].dst_name, "evil.example");
    assert_eq!((rows[1].flows, rows[1].denied), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path(), false, false).await;
    assert_eq!(push(&lab, POLICY).await.version, 1);

    // An invalid push: every error, nothing served.
    let reply = push(
        &lab,
        "[policy]\ndefault_action = \"maybe\"\n[[rules]]\nname = 1\n",
    )
    .await;
    assert_eq!(reply.version, 0);
    assert!(reply.errors.len() >= 2, "{:?}", reply.errors);
    assert!(
        reply.errors[0].starts_with("policy.toml:2:"),
        "{:?}",
        reply.errors
    );
    // A bundle that tries to escape the scratch directory.
    let mut escaping = bundle(POLICY);
    escaping.includes.push(control_proto::v1::BundledFile {
        path: "a/../../../etc/x.toml".into(),
        text: String::new(),
    });
    let reply = lab
        .operator()
        .await
        .push(PushRequest {
            policy: Some(escaping),
            inventory: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        reply.errors[0].contains("cannot be bundled"),
        "{:?}",
        reply.errors
    );
    // A push without a policy.
    let err = lab
        .operator()
        .await
        .push(PushRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A second Hello ends that stream with a clear error.
    let (tx, mut inbound) = lab.raw_gateway("g1", "g1").await.unwrap();
    let first = inbound.message().await.unwrap().unwrap();
    assert!(matches!(first.message, Some(In::Snapshot(s)) if s.version == 1));
    tx.send(GatewayMessage {
        message: Some(Out::Hello(Default::default())),
    })
    .await
    .unwrap();
    let err = loop {
        match inbound.message().await {
            Err(err) => break err,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error"),
        }
    };
    assert_eq!(err.code(), Code::InvalidArgument);

    // An oversized batch is refused by size.
    let (tx, mut inbound) = lab.raw_gateway("g2", "g2").await.unwrap();
    let huge = "x".repeat(1024 * 1024);
    tx.send(GatewayMessage {
        message: Some(Out::Decisions(DecisionBatch {
            records_json: vec![huge; 20],
            dropped: 0,
        })),
    })
    .await
    .unwrap();
    let err = loop {
        match inbound.message().await {
            Err(err) => break err,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error"),
        }
    };
    assert!(
        matches!(
            err.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ),
        "{err:?}"
    );

    // The controller still serves, and the store lost nothing.
    let s = status(&lab).await;
    assert_eq!(s.version, 1);
    let history = lab
        .operator()
        .await
        .history(HistoryRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.versions.len(), 1);
    assert_eq!(push(&lab, POLICY).await.version, 2);
}
