//! Shared helpers of the end-to-end tests (`e2e_*.rs`): root check, the lab's names, the
//! gateway under test, waiting, decision-record checks, SYN floods and packet taps.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bulkhead_lab::{addr, netns, Testbed};

/// Names the lab's TLS server has certificates for (all on one address).
pub const NAMES: &[&str] = &[
    "api.openai.com",
    "api.anthropic.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "exfil.example.net",
    "watch.example.org",
];

/// True when the tests can build namespaces; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if netns::is_root() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: end-to-end tests build network namespaces and need root \
         (run `cargo build -p bulkhead-gateway && sudo -E cargo test -p bulkhead-tests`)"
    );
    false
}

/// Builds a testbed with workloads `prod` and `dev`.
pub fn testbed() -> Testbed {
    Testbed::build("bhtest", &["prod", "dev"], NAMES).expect("build the lab")
}

pub fn server_v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addr::SERVER_V4), port)
}

pub fn server_v6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(addr::SERVER_V6), port)
}

pub fn c2_v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addr::C2_V4), port)
}

/// Polls `f` every 10 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

use bulkhead_lab::gateway::{GatewayProcess, GatewaySpec};
use serde_json::Value;

/// The `bulkhead` binary under test (see [`bulkhead_lab::bins`]); panics, saying how to build
/// it, when it is absent.
#[track_caller]
pub fn bulkhead_bin() -> std::path::PathBuf {
    bulkhead_lab::bins::path("bulkhead")
}

/// Starts `bulkhead run` in the testbed's gateway namespace with `policy`.
pub fn start_gateway(tb: &Testbed, policy: &str) -> GatewayProcess {
    start_gateway_with(tb, GatewaySpec::new(bulkhead_bin(), policy))
}

pub fn start_gateway_with(tb: &Testbed, spec: GatewaySpec) -> GatewayProcess {
    match GatewayProcess::start(&tb.lab, &spec) {
        Ok(gw) => gw,
        Err(e) => panic!("start the gateway: {e}"),
    }
}

/// The groups of the lab policies: prod and dev workloads, one WebGroup per provider.
pub const GROUPS: &str = r#"
[smartgroups.prod-agents]
cidrs = ["10.10.1.0/24", "fd00:10:1::/64"]

[smartgroups.dev]
cidrs = ["10.10.2.0/24", "fd00:10:2::/64"]

[webgroups.openai]
domains = ["api.openai.com"]

[webgroups.anthropic]
domains = ["api.anthropic.com"]

[webgroups.bedrock]
domains = ["bedrock-runtime.*.amazonaws.com"]

[webgroups.plain-ok]
domains = ["ok.example.com"]

[addressgroups.c2-blocklist]
cidrs = ["10.200.0.66/32", "fd00:200::66/128"]
"#;

/// A policy: `[policy]` header with the given mode, the shared groups, then `rules`.
pub fn policy(mode: &str, rules: &str) -> String {
    format!("[policy]\ndefault_action = \"deny\"\nmode = \"{mode}\"\n{GROUPS}\n{rules}")
}

/// The first record of the flow from `local` with this activity (1 open, 2 close, 5 refuse).
pub fn wait_flow_record(
    gw: &GatewayProcess,
    local: SocketAddr,
    activities: &[u64],
    timeout: Duration,
) -> Value {
    gw.wait_record(timeout, |r| {
        src_is(r, local) && activities.contains(&r["activity_id"].as_u64().unwrap_or(0))
    })
    .unwrap_or_else(|| {
        panic!(
            "no record with activity {activities:?} for {local} within {timeout:?}; records: {:#?}\ngateway output:\n{}",
            gw.records().unwrap_or_default(),
            gw.output()
        )
    })
}

pub fn src_is(r: &Value, local: SocketAddr) -> bool {
    r["src_endpoint"]["port"].as_u64() == Some(u64::from(local.port()))
        && r["src_endpoint"]["ip"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            == Some(local.ip())
}

/// What a decision record must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub activity_id: u64,
    pub action: &'a str,
    pub disposition: &'a str,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub protocol: &'a str,
    /// `dst_endpoint.hostname` and `tls.sni` (TLS) or `http.host` (plain HTTP).
    pub name: Option<&'a str>,
    pub tls: bool,
    pub rule: &'a str,
    pub reason: &'a str,
    pub src_groups: &'a [&'a str],
    pub dst_groups: &'a [&'a str],
}

fn strings(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    s.sort();
    s
}

/// Checks a decision record field by field.
pub fn check_record(r: &Value, e: &Expect<'_>) {
    let ctx = || format!("record {r:#}");
    assert_eq!(r["class_uid"].as_u64(), Some(4001), "{}", ctx());
    assert_eq!(r["activity_id"].as_u64(), Some(e.activity_id), "{}", ctx());
    assert_eq!(r["action"].as_str(), Some(e.action), "{}", ctx());
    assert_eq!(r["disposition"].as_str(), Some(e.disposition), "{}", ctx());
    assert!(src_is(r, e.src), "src_endpoint: {}", ctx());
    assert_eq!(
        r["dst_endpoint"]["ip"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok()),
        Some(e.dst.ip()),
        "dst_endpoint.ip: {}",
        ctx()
    );
    assert_eq!(
        r["dst_endpoint"]["port"].as_u64(),
        Some(u64::from(e.dst.port())),
        "{}",
        ctx()
    );
    assert_eq!(
        r["connection_info"]["protocol_name"].as_str(),
        Some(e.protocol),
        "{}",
        ctx()
    );
    match e.name {
        Some(name) => {
            assert_eq!(
                r["dst_endpoint"]["hostname"].as_str(),
                Some(name),
                "{}",
                ctx()
            );
            if e.tls {
                assert_eq!(r["tls"]["sni"].as_str(), Some(name), "{}", ctx());
            } else {
                assert_eq!(r["http"]["host"].as_str(), Some(name), "{}", ctx());
            }
        }
        None => {
            assert!(
                r["dst_endpoint"]["hostname"].is_null(),
                "no hostname: {}",
                ctx()
            );
            assert!(r["tls"]["sni"].is_null(), "no SNI: {}", ctx());
        }
    }
    assert_eq!(r["policy"]["name"].as_str(), Some(e.rule), "{}", ctx());
    assert!(r["policy"]["version"].as_u64().is_some(), "{}", ctx());
    assert_eq!(r["reason"].as_str(), Some(e.reason), "{}", ctx());
    let mut want_src: Vec<String> = e.src_groups.iter().map(|s| (*s).to_owned()).collect();
    want_src.sort();
    let mut want_dst: Vec<String> = e.dst_groups.iter().map(|s| (*s).to_owned()).collect();
    want_dst.sort();
    assert_eq!(strings(&r["src_groups"]), want_src, "src_groups: {}", ctx());
    assert_eq!(strings(&r["dst_groups"]), want_dst, "dst_groups: {}", ctx());
    assert_eq!(r["gateway_id"].as_str(), Some("lab-gw"), "{}", ctx());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let t = r["time"].as_u64().unwrap_or(0);
    assert!(
        t <= now_ms && now_ms - t < 120_000,
        "time {t} is not within the last two minutes ({now_ms}): {}",
        ctx()
    );
}

/// Nobody answers at this address of the internet link: every SYN sent there leaves a flow that
/// waits for its ClientHello.
pub const BLACKHOLE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 200, 0, 99);

/// Sends SYNs with changing source ports from `src` to `BLACKHOLE:443` from inside the
/// namespace (raw socket), about 10k a second, bounded in count and time. Returns the number
/// sent.
pub fn syn_flood(
    ns: &str,
    src: std::net::Ipv4Addr,
    max_packets: u32,
    max_time: Duration,
) -> anyhow::Result<u32> {
    let sent = netns::run_in(ns, move || -> std::io::Result<u32> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        let dst = SockAddr::from(std::net::SocketAddrV4::new(BLACKHOLE, 443));
        let start = Instant::now();
        let mut n = 0u32;
        let mut pkt = Vec::with_capacity(64);
        while n < max_packets && start.elapsed() < max_time {
            let sport = 1024 + (n % 60_000) as u16;
            pkt.clear();
            etherparse::PacketBuilder::ipv4(src.octets(), BLACKHOLE.octets(), 64)
                .tcp(sport, 443, n.wrapping_mul(2_654_435_761), 64_240)
                .syn()
                .write(&mut pkt, &[])
                .map_err(std::io::Error::other)?;
            match sock.send_to(&pkt, &dst) {
                Ok(_) => n += 1,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
            // About 10k SYNs a second.
            if n % 100 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(n)
    })??;
    Ok(sent)
}

/// One TCP or UDP packet seen by a [`Tap`].
#[derive(Debug, Clone)]
pub struct TapPacket {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IP length (header included).
    pub ip_len: u64,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    /// TCP payload bytes (a GSO packet counts all of its segments').
    pub payload: u64,
    /// The MSS option, on SYNs.
    pub mss: Option<u16>,
}

/// A packet capture (AF_PACKET, both directions) inside a namespace, for counting what really
/// crossed the workload's interface. Bounded: at most 1M packets are kept.
#[derive(Debug)]
pub struct Tap {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::io::Result<Vec<TapPacket>>>,
}

impl Tap {
    pub fn start(ns: &str) -> Tap {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = netns::spawn_in(ns, move || {
            use socket2::{Domain, Protocol, Socket, Type};
            use std::io::Read;
            let eth_p_all = i32::from((libc::ETH_P_ALL as u16).to_be());
            let mut sock =
                match Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(eth_p_all))) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Vec::new();
                    }
                };
            let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = sock.set_recv_buffer_size(8 << 20);
            let _ = ready_tx.send(Ok(()));
            let mut out = Vec::new();
            let mut buf = vec![0u8; 70_000];
            while !flag.load(Ordering::Relaxed) && out.len() < 1_000_000 {
                let Ok(n) = sock.read(&mut buf) else { continue };
                let Ok(p) = etherparse::SlicedPacket::from_ip(&buf[..n]) else {
                    continue;
                };
                let (sip, dip, ip_len): (IpAddr, IpAddr, u64) = match &p.net {
                    Some(etherparse::NetSlice::Ipv4(v4)) => (
                        v4.header().source_addr().into(),
                        v4.header().destination_addr().into(),
                        u64::from(v4.header().total_len()),
                    ),
                    Some(etherparse::NetSlice::Ipv6(v6)) => (
                        v6.header().source_addr().into(),
                        v6.header().destination_addr().into(),
                        40 + u64::from(v6.header().payload_length()),
                    ),
                    _ => continue,
                };
                if let Some(etherparse::TransportSlice::Tcp(t)) = &p.transport {
                    out.push(TapPacket {
                        src: SocketAddr::new(sip, t.source_port()),
                        dst: SocketAddr::new(dip, t.destination_port()),
                        ip_len,
                        syn: t.syn(),
                        fin: t.fin(),
                        rst: t.rst(),
                        payload: t.payload().len() as u64,
                        mss: t.options_iterator().find_map(|o| match o {
                            Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
                            _ => None,
                        }),
                    });
                }
            }
            out
        })
        .expect("spawn the tap");
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            other => panic!("packet tap: {other:?}"),
        }
        Tap { stop, thread }
    }

    pub fn stop(self) -> Vec<TapPacket> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .expect("tap thread")
            .expect("tap entered the namespace")
    }
}

/// The client's first flight on a TCP flow in a capture: (packets, payload bytes) the client
/// sent before the server's first byte of data, and the segment size both ends allow (the
/// smaller MSS of the SYN and the SYN-ACK).
pub fn first_flight(
    pkts: &[TapPacket],
    client: SocketAddr,
    server: SocketAddr,
) -> (u64, u64, Option<u16>) {
    let mut t = (0, 0, None::<u16>);
    for p in pkts {
        let ours = (p.src, p.dst) == (client, server) || (p.src, p.dst) == (server, client);
        if ours && p.syn {
            if let Some(m) = p.mss {
                t.2 = Some(t.2.map_or(m, |x| x.min(m)));
            }
        }
    }
    for p in pkts {
        if p.src == server && p.dst == client && p.payload > 0 {
            break;
        }
        if p.src == client && p.dst == server && p.payload > 0 {
            t.0 += 1;
            t.1 += p.payload;
        }
    }
    t
}

/// (bytes_out, packets_out, bytes_in, packets_in) of the TCP flow client <-> server in a
/// capture, up to and including the packet that closed it (the second FIN, or a RST): the
/// gateway writes the flow-end record then, and counts nothing after it.
pub fn tap_traffic(
    pkts: &[TapPacket],
    client: SocketAddr,
    server: SocketAddr,
) -> (u64, u64, u64, u64) {
    let mut t = (0, 0, 0, 0);
    let (mut fin_out, mut fin_in) = (false, false);
    for p in pkts {
        if p.src == client && p.dst == server {
            t.0 += p.ip_len;
            t.1 += 1;
            fin_out |= p.fin;
        } else if p.src == server && p.dst == client {
            t.2 += p.ip_len;
            t.3 += 1;
            fin_in |= p.fin;
        } else {
            continue;
        }
        if p.rst || (fin_out && fin_in) {
            break;
        }
    }
    t
}
