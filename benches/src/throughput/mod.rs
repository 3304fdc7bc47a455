//! The throughput harness: in one run, on one network-namespace topology (workload namespace --
//! gateway namespace -- server namespace, veth pairs, built by [`bulkhead_lab`]),
//! it measures
//!
//! 1. kernel forwarding in the gateway namespace, without a gateway process;
//! 2. a naive TUN forwarder with the gateway's device and routing that writes back every frame
//!    untouched ([`passthrough`]): the cost of the TUN architecture alone;
//! 3. `bulkhead run` with a policy that permits everything (the kernel fast path on, as by
//!    default: decided flows leave the TUN);
//! 4. the same with `fast_path = false` (every packet crosses the TUN);
//! 5. `bulkhead run` with a generated policy of 10,000 rules ([`policy::generate`]),
//!
//! and for each: iperf3 TCP throughput with 1 and 4 streams, new TLS connections per second
//! ([`tls`]), and TCP round-trip latency ([`pingpong`]). [`report::Report::to_markdown`] prints
//! the figures with their ratios to kernel forwarding.
//!
//! All traffic stays inside the namespaces the run creates; every step is bounded in time; the
//! namespaces and child processes are removed on exit, on error and on Ctrl-C / SIGTERM
//! ([`Interrupt`]).

pub mod gateway;
pub mod iperf;
pub mod passthrough;
pub mod pingpong;
pub mod policy;
pub mod report;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set when the run must stop (Ctrl-C or SIGTERM); every loop of the harness checks it.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets this flag on SIGINT or SIGTERM (from a background thread). The first signal asks for
    /// an orderly stop: the running step ends, children are stopped and the namespaces removed
    /// by their destructors. A second signal removes what the lab registered and exits at once.
    pub fn install_signal_handlers(&self) -> anyhow::Result<()> {
        let flag = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        // Register the handlers before returning, so that no signal is missed after this call.
        let (mut int, mut term) = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            anyhow::Ok((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                rt.block_on(async {
                    let mut seen = 0;
                    loop {
                        tokio::select! {
                            _ = int.recv() => {}
                            _ = term.recv() => {}
                        }
                        seen += 1;
                        if seen == 1 {
                            eprintln!("throughput: stopping (signal); cleaning up");
                            flag.set();
                        } else {
                            eprintln!("throughput: second signal: removing the lab and exiting");
                            bulkhead_lab::emergency_cleanup();
                            std::process::exit(130);
                        }
                    }
                });
            })?;
        Ok(())
    }
}

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bulkhead_lab::netns;
use bulkhead_lab::pki::Pki;
use bulkhead_lab::servers::{InternetServers, ServerSpec};
use bulkhead_lab::{addr, Lab, LabSpec};

use report::{Figure, Report, Setup, SetupResult};

/// Port of the iperf3 server.
pub const IPERF_PORT: u16 = 5201;
/// Port of the ping-pong echo server.
pub const PINGPONG_PORT: u16 = 7007;
/// Port of the lab's TLS server.
pub const TLS_PORT: u16 = 443;
/// The name the TLS handshakes ask for.
pub const TLS_NAME: &str = "api.throughput.example";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Duration of each iperf3 test.
    pub iperf_seconds: u32,
    /// Duration of each TLS handshake loop.
    pub tls_seconds: u32,
    /// Client threads of the TLS handshake loop.
    pub tls_threads: usize,
    /// Ping-pong round trips per set-up (stopped after 10 s whatever the count).
    pub round_trips: usize,
    /// Rules in the generated policy.
    pub rules: usize,
    /// TUN queues (workers) of the gateway.
    pub queues: u16,
    /// `[gateway] busy_poll_us` of the gateway; `None`: its default.
    pub busy_poll_us: Option<u32>,
    /// The `bulkhead` binary; default: next to this executable.
    pub bulkhead: Option<PathBuf>,
    /// The set-ups to measure, in [`Setup::ALL`] order (kernel forwarding always).
    pub setups: Vec<Setup>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iperf_seconds: 10,
            tls_seconds: 5,
            tls_threads: 2,
            round_trips: 5_000,
            rules: 10_000,
            queues: std::thread::available_parallelism()
                .map(|n| u16::try_from(n.get()).unwrap_or(u16::MAX))
                .unwrap_or(1),
            busy_poll_us: None,
            bulkhead: None,
            setups: Setup::ALL.to_vec(),
        }
    }
}

/// Runs the three set-ups and returns their figures. Fails only when the lab cannot be built or
/// the run was interrupted; a figure that cannot be measured is reported as missing, with why.
pub fn run(opts: &Options, interrupt: &Interrupt) -> anyhow::Result<Report> {
    if !netns::is_root() {
        bail!("the throughput harness needs root (network namespaces, veth pairs, a TUN device)");
    }
    for tool in ["ip", "iperf3"] {
        which(tool).with_context(|| format!("{tool} is not installed"))?;
    }
    let bulkhead = locate_bulkhead(opts.bulkhead.as_deref())?;
    let load_before = load_average();
    eprintln!("throughput: building the lab");
    let lab = Lab::build(&LabSpec::new("bhtput", &["bench"]))?;
    let wl = lab.workload("bench").clone();
    if wl.v4 != addr::workload_v4(0) || wl.v6 != addr::workload_v6(0) {
        bail!("the lab's benchmark client is not at the address the generated policy expects");
    }
    // Thousands of short TLS connections per set-up: let the client reuse TIME_WAIT ports.
    lab.sysctl(&wl.netns, "net.ipv4.tcp_tw_reuse", "1")?;
    let pki = Pki::generate(&[TLS_NAME])?;
    let spec = ServerSpec {
        tls_ports: vec![TLS_PORT],
        http_ports: vec![],
        udp_echo_ports: vec![],
    };
    let _servers = InternetServers::start(lab.internet_netns(), &pki, &spec)?;
    let client_config = pki.client_config()?;
    let server_ip = IpAddr::V4(addr::SERVER_V4);
    let _iperf = iperf::start_server(lab.internet_netns(), server_ip, IPERF_PORT)?;
    std::thread::sleep(Duration::from_millis(300));

    let bench = Bench {
        lab: &lab,
        client_ns: wl.netns.clone(),
        server_ip,
        client_config,
        opts,
        interrupt,
    };
    let (large, shape) = generated_policy(opts);

    let mut results = Vec::new();
    let mut notes = Vec::new();
    for setup in Setup::ALL
        .into_iter()
        .filter(|s| *s == Setup::Kernel || opts.setups.contains(s))
    {
        if interrupt.is_set() {
            bail!("interrupted");
        }
        eprintln!("throughput: measuring {}", setup.label());
        results.push(bench.measure_setup(setup, &bulkhead, &large, &mut notes)?);
    }
    notes.push(format!(
        "Generated policy: {} rules, {} SmartGroups, {} WebGroups with {} name patterns, {} \
         AddressGroups, {} CIDRs in total; one rule in ten applies to the benchmark client, so its \
         flows are held until their first bytes and decided by name lookup.",
        shape.rules,
        shape.smartgroups,
        shape.webgroups,
        shape.patterns,
        shape.addressgroups,
        shape.cidrs
    ));
    notes.push(format!(
        "iperf3: {} s per test; TLS: {} client threads for {} s, a new TCP connection and a full \
         TLS 1.3 handshake (X25519MLKEM768 key share, ECDSA P-256 certificate) each; round trips: \
         {}-byte TCP ping-pong on one connection, up to {} samples.",
        opts.iperf_seconds,
        opts.tls_threads,
        opts.tls_seconds,
        pingpong::MESSAGE,
        opts.round_trips
    ));
    notes.push(format!(
        "Load average (1, 5, 15 min) before the run: {load_before}; after: {}. Other processes \
         on the machine share the CPUs with the workload, the gateway and the servers.",
        load_average()
    ));
    Ok(Report { results, notes })
}

/// The generated policy for the lab's address plan: the benchmark client is the lab's first
/// workload, the servers are the internet namespace's main addresses.
pub fn generated_policy(opts: &Options) -> (String, policy::GeneratedShape) {
    let targets = policy::BenchTargets {
        client_cidrs: vec![
            format!("{}/32", addr::workload_v4(0)),
            format!("{}/128", addr::workload_v6(0)),
        ],
        servers: vec![IpAddr::V4(addr::SERVER_V4), IpAddr::V6(addr::SERVER_V6)],
        tcp_ports: vec![IPERF_PORT, PINGPONG_PORT],
        tls_names: vec![TLS_NAME.to_owned()],
    };
    policy::generate(opts.rules, &targets)
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a set-up runs while it is measured.
enum Running {
    Passthrough(passthrough::Passthrough),
    Gateway(gateway::Gateway),
}

struct Bench<'a> {
    lab: &'a Lab,
    client_ns: String,
    server_ip: IpAddr,
    client_config: Arc<rustls::ClientConfig>,
    opts: &'a Options,
    interrupt: &'a Interrupt,
}

impl Bench<'_> {
    /// Starts what `setup` needs (the pass-through forwarder, a gateway on the permit-all or the
    /// generated policy), measures it, stops it and adds how the stop went to `notes`. A set-up
    /// that cannot start is reported as missing, with why; only an interruption is an error.
    fn measure_setup(
        &self,
        setup: Setup,
        bulkhead: &Path,
        large: &str,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<SetupResult> {
        let (started, what) = match setup {
            Setup::Kernel => return self.measure(setup),
            Setup::TunPassthrough => (
                passthrough::Passthrough::start(self.lab, self.opts.queues, self.opts.busy_poll_us)
                    .map(Running::Passthrough),
                "the forwarder",
            ),
            Setup::GatewayPermitAll | Setup::GatewayNoFastPath | Setup::GatewayLargePolicy => {
                let text = if setup == Setup::GatewayLargePolicy {
                    large.to_owned()
                } else {
                    policy::permit_all()
                };
                let fast_path = (setup == Setup::GatewayNoFastPath).then_some(false);
                (
                    gateway::Gateway::start(self.lab, bulkhead, &text, self.opts, fast_path)
                        .map(Running::Gateway),
                    "the gateway",
                )
            }
        };
        let running = match started {
            Ok(running) => running,
            Err(e) => {
                if self.interrupt.is_set() {
                    bail!("interrupted");
                }
                return Ok(SetupResult::missing(setup, &format!("{e:#}")));
            }
        };
        if matches!(running, Running::Passthrough(_)) {
            // Let the routing settle as the gateway's readiness wait would.
            std::thread::sleep(Duration::from_millis(300));
        }
        let result = self.measure(setup)?;
        let stopped = match running {
            Running::Passthrough(fwd) => fwd.stop(),
            Running::Gateway(gw) => gw.stop(),
        };
        match stopped {
            Ok(summary) => notes.push(format!("{}: {summary}.", setup.label())),
            Err(e) => notes.push(format!("{}: stopping {what}: {e:#}", setup.label())),
        }
        Ok(result)
    }

    /// Measures every figure of one set-up; a figure that fails is recorded as missing. Only an
    /// interruption is an error.
    fn measure(&self, setup: Setup) -> anyhow::Result<SetupResult> {
        let figure = |r: anyhow::Result<f64>| -> anyhow::Result<Figure> {
            if self.interrupt.is_set() {
                bail!("interrupted");
            }
            Ok(match r {
                Ok(v) => Figure::Value(v),
                Err(e) => {
                    eprintln!("throughput: {}: {e:#}", setup.label());
                    Figure::Missing(format!("{e:#}"))
                }
            })
        };
        let ns = self.client_ns.as_str();
        let secs = self.opts.iperf_seconds;
        let tcp1 = figure(iperf::run_client(
            ns,
            self.server_ip,
            IPERF_PORT,
            1,
            secs,
            self.interrupt,
        ))?;
        let tcp4 = figure(iperf::run_client(
            ns,
            self.server_ip,
            IPERF_PORT,
            4,
            secs,
            self.interrupt,
        ))?;
        let tls = figure(
            tls::measure(
                ns,
                SocketAddr::new(self.server_ip, TLS_PORT),
                TLS_NAME,
                self.client_config.clone(),
                self.opts.tls_threads,
                Duration::from_secs(u64::from(self.opts.tls_seconds)),
                self.interrupt,
            )
            .map(|r| r.per_second),
        )?;
        let rtt = pingpong::measure(
            ns,
            self.lab.internet_netns(),
            self.server_ip,
            PINGPONG_PORT,
            self.opts.round_trips,
            Duration::from_secs(10),
            self.interrupt,
        );
        let (median, p99) = match rtt {
            Ok(r) => (Ok(r.median_us), Ok(r.p99_us)),
            Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
        };
        Ok(SetupResult {
            setup,
            tcp_1_stream_bps: tcp1,
            tcp_4_streams_bps: tcp4,
            tls_handshakes_per_s: tls,
            rtt_median_us: figure(median)?,
            rtt_p99_us: figure(p99)?,
        })
    }
}

/// The `bulkhead` binary: the given path, or the one [`bulkhead_lab::bins`] finds (by default
/// next to this executable).
fn locate_bulkhead(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let Some(path) = given else {
        return bulkhead_lab::bins::find("bulkhead").map_err(|e| {
            anyhow::anyhow!(
                "{e} (for measurements, a release build: `cargo build --release -p \
                 bulkhead-gateway`; or pass --bulkhead PATH)"
            )
        });
    };
    if !path.is_file() {
        bail!(
            "no bulkhead binary at {} (build it with `cargo build --release -p bulkhead-gateway`, \
             or pass --bulkhead PATH)",
            path.display()
        );
    }
    Ok(path.to_path_buf())
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} not found in PATH"))
}

/// The machine the figures were measured on, as markdown lines: CPU count, CPU model, kernel.
pub fn machine_facts() -> String {
    let run = |prog: &str, args: &[&str]| {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let nproc = run("nproc", &[]);
    let lscpu = run("lscpu", &[]);
    let field = |name: &str| {
        lscpu
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let kernel = run("uname", &["-r"]);
    let iperf = run("iperf3", &["--version"]);
    format!(
        "Machine: `nproc` = {nproc}; CPU: {} ({} threads per core, hypervisor: {}); kernel {kernel}; {}.\n",
        field("Model name:"),
        field("Thread(s) per core:"),
        field("Hypervisor vendor:"),
        iperf.lines().next().unwrap_or("iperf3")
    )
}
