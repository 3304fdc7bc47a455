//! The control plane at fleet scale: one controller on 127.0.0.1 and 1,000 gateway streams over
//! real sockets with mutual TLS, in this process.
//!
//! Each gateway is a raw tonic client with its own gateway certificate: it sends its Hello and
//! ACKs every snapshot as soon as it has decoded it. The run:
//!
//! 1. issues the PKI (a CA, the controller, an operator and one certificate per gateway) into a
//!    temporary directory and starts the controller;
//! 2. pushes a 10k-rule synthetic policy and reads VmRSS;
//! 3. connects the gateways (at most 64 TLS handshakes at a time) and waits until every one has
//!    ACKed that version: the connect time, and VmRSS again;
//! 4. pushes small policy changes through the operator API and, for each, measures the time
//!    from the start of the push call to the last gateway's ACK. "Client-side" is the instant the
//!    last client sent its ACK; "controller-side" is when the operator `status` call first shows
//!    every gateway `acked` at that version (polled every 10 ms once the clients are done, so it
//!    is an upper bound with 10 ms resolution).
//!
//! VmRSS is that of this whole process: the controller and the 1,000 client connections. It is
//! an upper bound on the controller's memory.
//!
//! Run: `cargo bench -p bulkhead-benches --bench fleet`. `BULKHEAD_FLEET_GATEWAYS` and
//! `BULKHEAD_FLEET_CHANGES` change the fleet size (1000) and the number of changes (20).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bulkhead_controller::certs::{init, issue, Subject};
use bulkhead_controller::config::ControllerConfig;
use bulkhead_controller::server::{start, Options, Running};
use bulkhead_testkit::synthetic::{synthetic_policy, Shape};
use control_proto::v1::controller_message::Message as In;
use control_proto::v1::gateway_message::Message as Out;
use control_proto::v1::operator_client::OperatorClient;
use control_proto::v1::policy_distribution_client::PolicyDistributionClient;
use control_proto::v1::{
    Ack, GatewayMessage, Hello, PolicyBundle, PushRequest, StatusReply, StatusRequest,
};
use policy_engine::{DstGroup, DstSpec, Policy, Ports, SrcSpec};
use prost::Message as _;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The policy the timed changes vary (its rule's priority changes on every push).
const SMALL_POLICY: &str = r#"
[policy]
default_action = "deny"

[smartgroups.prod-agents]
cidrs = ["10.9.0.0/16"]

[webgroups.openai]
domains = ["api.openai.com"]

[[rules]]
name = "prod-to-openai"
priority = PRIORITY
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;

/// 10k rules over 1,000 SmartGroups, 500 WebGroups and 167 AddressGroups.
const FLEET_SHAPE: Shape = Shape {
    rules: 10_000,
    patterns: 10_000,
    cidrs: 15_000,
};

/// Simultaneous TLS handshakes while connecting.
const CONNECTING: usize = 64;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let gateways = env_usize("BULKHEAD_FLEET_GATEWAYS", 1000);
    let changes = env_usize("BULKHEAD_FLEET_CHANGES", 20);
    check_nofile(gateways)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(gateways, changes))
}

/// Every gateway holds two descriptors here (its client end and the controller's end).
fn check_nofile(gateways: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    let needed = gateways * 2 + 256;
    if let Some(soft) = soft {
        if soft < needed {
            bail!(
                "the open-file limit is {soft}; {gateways} gateways need about {needed}: \
                 run `ulimit -n {needed}` first"
            );
        }
    }
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What the clients saw: per version, how many ACKed and when the last one did.
#[derive(Default)]
struct Acks {
    by_version: Mutex<HashMap<u64, (usize, Option<Instant>)>>,
    changed: Notify,
    /// Encoded size of the last snapshot message gateway 0 received.
    snapshot_bytes: AtomicU64,
}

impl Acks {
    fn record(&self, version: u64, at: Instant) {
        let mut map = self.by_version.lock().unwrap();
        let entry = map.entry(version).or_insert((0, None));
        entry.0 += 1;
        entry.1 = Some(entry.1.map_or(at, |t| t.max(at)));
        drop(map);
        self.changed.notify_waiters();
    }

    /// Waits until `count` gateways ACKed `version`; returns the last ACK's instant.
    async fn wait(&self, version: u64, count: usize, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            {
                let map = self.by_version.lock().unwrap();
                if let Some((n, Some(at))) = map.get(&version) {
                    if *n >= count {
                        return Ok(*at);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let n = self
                    .by_version
                    .lock()
                    .unwrap()
                    .get(&version)
                    .map_or(0, |e| e.0);
                bail!("only {n} of {count} gateways ACKed version {version} in {limit:?}");
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

struct Lab {
    pki: PathBuf,
    url: String,
}

impl Lab {
    fn ca(&self) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(self.pki.join("ca.pem"))?)
    }

    fn pair(&self, stem: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        Ok((
            std::fs::read(self.pki.join(format!("{stem}.pem")))?,
            std::fs::read(self.pki.join(format!("{stem}.key")))?,
        ))
    }

    async fn channel(&self, stem: &str) -> anyhow::Result<Channel> {
        let (cert, key) = self.pair(stem)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca()?))
            .identity(Identity::from_pem(cert, key))
            .domain_name("127.0.0.1");
        Ok(Endpoint::from_shared(self.url.clone())?
            .tls_config(tls)?
            .connect()
            .await?)
    }
}

fn gateway_id(i: usize) -> String {
    format!("gw-{i:04}")
}

/// The PKI: CA, controller, operator and one certificate per gateway.
fn issue_pki(pki: &Path, gateways: usize) -> anyhow::Result<()> {
    init(pki)?;
    issue(
        pki,
        &Subject::Controller(vec!["localhost".into(), "127.0.0.1".into()]),
    )?;
    issue(pki, &Subject::Operator("bench".into()))?;
    for i in 0..gateways {
        issue(pki, &Subject::Gateway(gateway_id(i)))?;
    }
    Ok(())
}

async fn start_controller(root: &Path) -> anyhow::Result<Running> {
    std::fs::write(
        root.join("controller.toml"),
        "[controller]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
         [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\n\
         [policy]\n",
    )?;
    let config = ControllerConfig::load(&root.join("controller.toml"))?;
    let options = Options {
        poll_interval: Duration::from_secs(2),
        hello_timeout: Duration::from_secs(60),
    };
    start(&config, options, std::future::pending()).await
}

/// One gateway stream: Hello, then an ACK for every snapshot.
async fn gateway(lab: Arc<Lab>, i: usize, acks: Arc<Acks>, gate: Arc<Semaphore>) {
    let id = gateway_id(i);
    let opened = async {
        let _permit = gate.acquire().await?;
        let channel = lab.channel(&format!("gateway-{id}")).await?;
        let mut client =
            PolicyDistributionClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(4);
        tx.send(GatewayMessage {
            message: Some(Out::Hello(Hello {
                gateway_id: id.clone(),
                build_version: "bench".into(),
                enforced_version: 0,
            })),
        })
        .await?;
        let inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        anyhow::Ok((tx, inbound))
    };
    let (tx, mut inbound) = match opened.await {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("{id}: cannot open the stream: {e:#}");
            return;
        }
    };
    loop {
        match inbound.message().await {
            Ok(Some(message)) => {
                let size = message.encoded_len();
                if let Some(In::Snapshot(snapshot)) = message.message {
                    if i == 0 {
                        acks.snapshot_bytes.store(size as u64, Ordering::Relaxed);
                    }
                    let ack = GatewayMessage {
                        message: Some(Out::Ack(Ack {
                            version: snapshot.version,
                            nonce: snapshot.nonce,
                        })),
                    };
                    if tx.send(ack).await.is_err() {
                        return;
                    }
                    acks.record(snapshot.version, Instant::now());
                }
            }
            Ok(None) => return,
            Err(status) => {
                eprintln!("{id}: stream failed: {status}");
                return;
            }
        }
    }
}

fn bundle(text: String) -> PushRequest {
    PushRequest {
        policy: Some(PolicyBundle {
            name: "policy.toml".into(),
            text,
            includes: Vec::new(),
        }),
        inventory: None,
    }
}

async fn push(operator: &mut OperatorClient<Channel>, text: String) -> anyhow::Result<u64> {
    let reply = operator.push(bundle(text)).await?.into_inner();
    if !reply.errors.is_empty() {
        bail!(
            "the push was refused: {:?}",
            &reply.errors[..reply.errors.len().min(5)]
        );
    }
    Ok(reply.version)
}

fn all_acked(status: &StatusReply, version: u64, gateways: usize) -> bool {
    status
        .gateways
        .iter()
        .filter(|g| g.connected && g.state == "acked" && g.enforced_version == version)
        .count()
        >= gateways
}

/// Polls `status` every 10 ms until the controller shows every gateway acked at `version`.
async fn wait_status(
    operator: &mut OperatorClient<Channel>,
    version: u64,
    gateways: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = operator.status(StatusRequest {}).await?.into_inner();
        if all_acked(&status, version, gateways) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the controller does not show every gateway acked at version {version}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The synthetic policy in the policy language.
fn policy_toml(policy: &Policy) -> String {
    let mut out = String::from("[policy]\ndefault_action = \"deny\"\n\n");
    let list = |items: Vec<String>| {
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for g in &policy.smartgroups {
        let cidrs = list(g.cidrs.iter().map(|c| c.to_string()).collect());
        let _ = writeln!(out, "[smartgroups.{}]\ncidrs = [{cidrs}]\n", g.name);
    }
    for g in &policy.webgroups {
        let domains = list(g.patterns.iter().map(|p| p.to_string()).collect());
        let _ = writeln!(out, "[webgroups.{}]\ndomains = [{domains}]\n", g.name);
    }
    for g in &policy.addressgroups {
        let cidrs = list(g.cidrs.iter().map(|c| c.to_string()).collect());
        let _ = writeln!(out, "[addressgroups.{}]\ncidrs = [{cidrs}]\n", g.name);
    }
    for r in &policy.rules {
        let src = match &r.src {
            SrcSpec::Any => list(vec!["any".into()]),
            SrcSpec::Groups(g) => list(
                g.iter()
                    .map(|&i| policy.smartgroups[i as usize].name.clone())
                    .collect(),
            ),
        };
        let dst = match &r.dst {
            DstSpec::Any => list(vec!["any".into()]),
            DstSpec::Groups(g) => list(
                g.iter()
                    .map(|d| match *d {
                        DstGroup::Web(i) => policy.webgroups[i as usize].name.clone(),
                        DstGroup::Address(i) => policy.addressgroups[i as usize].name.clone(),
                        DstGroup::Smart(i) => policy.smartgroups[i as usize].name.clone(),
                    })
                    .collect(),
            ),
        };
        let _ = writeln!(
            out,
            "[[rules]]\nname = \"{}\"\npriority = {}\nsrc = [{src}]\ndst = [{dst}]\n\
             protocol = \"{}\"\naction = \"{}\"",
            r.name,
            r.priority,
            r.protocol.as_str(),
            r.action.as_str()
        );
        if let Ports::Ranges(ranges) = &r.ports {
            let ports = list(
                ranges
                    .iter()
                    .map(|p| {
                        if p.start == p.end {
                            p.start.to_string()
                        } else {
                            format!("{}-{}", p.start, p.end)
                        }
                    })
                    .collect(),
            );
            let _ = writeln!(out, "ports = [{ports}]");
        }
        if r.log {
            out.push_str("log = true\n");
        }
        if r.watch {
            out.push_str("watch = true\n");
        }
        out.push('\n');
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(gateways: usize, changes: usize) -> anyhow::Result<()> {
    if changes == 0 {
        bail!("BULKHEAD_FLEET_CHANGES must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    let pki = root.join("pki");

    let began = Instant::now();
    issue_pki(&pki, gateways).context("issuing the PKI")?;
    let issued = began.elapsed();

    let running = start_controller(&root).await?;
    let lab = Arc::new(Lab {
        url: format!("https://127.0.0.1:{}", running.addr.port()),
        pki,
    });
    let mut operator = OperatorClient::new(lab.channel("operator-bench").await?)
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024);

    // The 10k-rule policy, served before the gateways connect.
    let synthetic = synthetic_policy(FLEET_SHAPE, 7);
    let large = policy_toml(&synthetic.policy);
    let began = Instant::now();
    let large_version = push(&mut operator, large.clone()).await?;
    let large_push = began.elapsed();
    let rss_before = rss_kib();

    // Connect the fleet; every gateway ACKs the 10k-rule snapshot.
    let acks = Arc::new(Acks::default());
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(gateways);
    for i in 0..gateways {
        tasks.push(tokio::spawn(gateway(
            Arc::clone(&lab),
            i,
            Arc::clone(&acks),
            Arc::clone(&gate),
        )));
    }
    let last = acks
        .wait(large_version, gateways, Duration::from_secs(600))
        .await?;
    let connect = last - began;
    let snapshot_bytes = acks.snapshot_bytes.load(Ordering::Relaxed);
    let rss_after = rss_kib();
    wait_status(&mut operator, large_version, gateways).await?;
    let connect_controller = began.elapsed();

    // Timed changes.
    let mut client_side = Vec::with_capacity(changes);
    let mut controller_side = Vec::with_capacity(changes);
    for round in 0..changes {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = SMALL_POLICY.replace("PRIORITY", &(100 + round).to_string());
        let began = Instant::now();
        let version = push(&mut operator, text).await?;
        let last = acks
            .wait(version, gateways, Duration::from_secs(60))
            .await?;
        client_side.push(last - began);
        wait_status(&mut operator, version, gateways).await?;
        controller_side.push(began.elapsed());
    }
    let rss_end = rss_kib();
    client_side.sort();
    controller_side.sort();

    // One more change back to the 10k-rule policy, to time a large snapshot's fan-out.
    let began = Instant::now();
    let version = push(&mut operator, large.replace("rule-0\"", "rule-zero\"")).await?;
    let last = acks
        .wait(version, gateways, Duration::from_secs(600))
        .await?;
    let large_change = last - began;

    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("control plane: 1 controller, {gateways} gateway streams (mutual TLS, 127.0.0.1)");
    println!(
        "  PKI issued ({} certificates)          {}",
        gateways + 2,
        ms(issued)
    );
    println!(
        "  10k-rule policy: {} rules, {} patterns, {} CIDRs; TOML {} KiB; push {}",
        synthetic.policy.rules.len(),
        FLEET_SHAPE.patterns,
        FLEET_SHAPE.cidrs,
        large.len() / 1024,
        ms(large_push)
    );
    println!(
        "  snapshot message (encoded protobuf)      {} bytes ({:.2} MiB)",
        snapshot_bytes,
        snapshot_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  connect {gateways} streams + ACK the 10k-rule snapshot   {}",
        ms(connect)
    );
    println!(
        "    the same as shown by the controller's status (10 ms polls)   {}",
        ms(connect_controller)
    );
    println!(
        "  VmRSS before connecting / after / after the changes   {} / {} / {}",
        mib(rss_before),
        mib(rss_after),
        mib(rss_end)
    );
    println!("  {changes} small policy changes (operator push -> last ACK):");
    println!(
        "    client-side (last ACK sent)            median {}  p99 {}  max {}",
        ms(percentile(&client_side, 50.0)),
        ms(percentile(&client_side, 99.0)),
        ms(*client_side.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "    controller-side (status, 10 ms polls)  median {}  p99 {}  max {}",
        ms(percentile(&controller_side, 50.0)),
        ms(percentile(&controller_side, 99.0)),
        ms(*controller_side.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "  one change of the 10k-rule policy -> last ACK (client-side)   {}",
        ms(large_change)
    );
    println!("  /proc/loadavg at the end: {}", loadavg.trim());

    for task in tasks {
        task.abort();
    }
    drop(lab);
    Ok(())
}
