//! Helpers of the control-plane tests: a controller (`bulkheadctl serve`) and a fleet of real
//! `bulkhead run` gateways, each in its own lab.
//!
//! Topology: every gateway runs in its lab's gateway namespace, as in the other end-to-end tests.
//! The controller runs in a namespace of its own with one veth pair per gateway (controller side
//! `10.250.K.1/30`, gateway side `ctl0`, `10.250.K.2/30`). Nothing touches the root namespace,
//! the control connection is a plain outbound connection of the gateway (not forwarded through
//! its TUN), and the operator commands run inside the controller namespace against
//! `127.0.0.1`. The controller's certificate names every address it is dialled on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bulkhead_lab::gateway::{GatewayProcess, GatewaySpec};
use bulkhead_lab::{Lab, LabSpec};
use serde_json::Value;

/// The controller's port, inside its namespace.
pub const CONTROLLER_PORT: u16 = 50051;

static FLEET_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A controller namespace, its certificates and (while it runs) the controller, plus one lab
/// per gateway. Drop the gateways first: dropping the fleet removes their namespaces.
#[derive(Debug)]
pub struct Fleet {
    controller: Option<Child>,
    netns: String,
    dir: PathBuf,
    /// One lab per gateway, in gateway order.
    pub labs: Vec<Lab>,
}

/// The `bulkheadctl` binary under test.
#[track_caller]
pub fn bulkheadctl_bin() -> PathBuf {
    bulkhead_lab::bins::path("bulkheadctl")
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

impl Fleet {
    /// Builds `gateways` labs, the controller namespace linked to each, and the certificates
    /// (CA, controller, operator `ops`, one per gateway id `gw1`..).
    pub fn build(gateways: u8) -> Fleet {
        let labs: Vec<Lab> = (0..gateways)
            .map(|_| Lab::build(&LabSpec::new("bhcp", &["prod"])).expect("build a lab"))
            .collect();
        let names: Vec<String> = labs.iter().map(|l| l.gateway_netns().to_owned()).collect();
        Fleet::link(&names, labs)
    }

    /// A controller namespace linked to existing gateway namespaces (e.g. a testbed's); gateway
    /// `K` (1-based) is the one in `gateway_netns[K - 1]`. The caller keeps those namespaces
    /// until the fleet is dropped.
    pub fn around(gateway_netns: &[&str]) -> Fleet {
        let names: Vec<String> = gateway_netns.iter().map(|n| (*n).to_owned()).collect();
        Fleet::link(&names, Vec::new())
    }

    fn link(gateway_netns: &[String], labs: Vec<Lab>) -> Fleet {
        let n = FLEET_COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let netns = format!("bhcp-{pid}-{}-ctl", 1000 + n);
        let dir = std::env::temp_dir().join(format!("bulkhead-fleet-{pid}-{n}"));
        std::fs::create_dir_all(&dir).expect("create the fleet directory");
        ip(&["netns", "add", &netns]);
        let fleet = Fleet {
            controller: None,
            netns,
            dir,
            labs,
        };
        let ns = fleet.netns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        for (i, gw_ns) in gateway_netns.iter().enumerate() {
            let k = i + 1;
            let here = format!("gw{k}");
            let veth = ["link", "add", &here, "type", "veth", "peer", "name", "ctl0"];
            let mut args = vec!["-n", ns];
            args.extend(veth);
            args.extend(["netns", gw_ns.as_str()]);
            ip(&args);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.250.{k}.1/30"),
                "dev",
                &here,
            ]);
            ip(&["-n", ns, "link", "set", &here, "up"]);
            ip(&[
                "-n",
                gw_ns,
                "addr",
                "add",
                &format!("10.250.{k}.2/30"),
                "dev",
                "ctl0",
            ]);
            ip(&["-n", gw_ns, "link", "set", "ctl0", "up"]);
        }
        let count = u8::try_from(gateway_netns.len()).expect("at most 255 gateways");
        fleet.issue_certificates(count);
        fleet
    }

    fn issue_certificates(&self, gateways: u8) {
        let pki = self.pki();
        run(Command::new(bulkheadctl_bin())
            .args(["certs", "init"])
            .arg(&pki));
        let mut hosts = vec!["127.0.0.1".to_owned()];
        hosts.extend((1..=gateways).map(|k| format!("10.250.{k}.1")));
        run(Command::new(bulkheadctl_bin())
            .args(["certs", "issue"])
            .arg(&pki)
            .arg("--controller")
            .args(&hosts));
        run(Command::new(bulkheadctl_bin())
            .args(["certs", "issue"])
            .arg(&pki)
            .args(["--operator", "ops"]));
        for k in 1..=gateways {
            run(Command::new(bulkheadctl_bin())
                .args(["certs", "issue"])
                .arg(&pki)
                .args(["--gateway", &format!("gw{k}")]));
        }
    }

    /// The certificate directory.
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// A scratch directory removed with the fleet.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts `bulkheadctl serve` (state kept in the fleet directory across restarts) and waits
    /// until `status` answers.
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "the controller already runs");
        let pki = self.pki();
        let config = self.dir.join("controller.toml");
        let text = format!(
            "[controller]\nlisten = \"0.0.0.0:{CONTROLLER_PORT}\"\nstate_dir = {state:?}\n\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n",
            state = self.dir.join("controller-state").display().to_string(),
            ca = pki.join("ca.pem").display().to_string(),
            cert = pki.join("controller.pem").display().to_string(),
            key = pki.join("controller.key").display().to_string(),
        );
        std::fs::write(&config, text).expect("write controller.toml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("controller.out"))
            .expect("open the controller's output file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(bulkheadctl_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start bulkheadctl serve");
        self.controller = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.operator(&["status"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the controller did not answer; its output:\n{}",
                self.controller_output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the controller (SIGKILL: an outage, not a goodbye).
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The controller's output so far.
    pub fn controller_output(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.out")).unwrap_or_default()
    }

    /// Runs `bulkheadctl --json ARGS` as operator `ops` inside the controller namespace.
    pub fn operator(&self, args: &[&str]) -> Output {
        let pki = self.pki();
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(bulkheadctl_bin())
            .arg("--json")
            .arg("--controller")
            .arg(format!("https://127.0.0.1:{CONTROLLER_PORT}"))
            .arg("--ca")
            .arg(pki.join("ca.pem"))
            .arg("--cert")
            .arg(pki.join("operator-ops.pem"))
            .arg("--key")
            .arg(pki.join("operator-ops.key"))
            .args(args)
            .output()
            .expect("run bulkheadctl")
    }

    /// `bulkheadctl push`: writes `policy` to a file and pushes it; the version served.
    pub fn push(&self, policy: &str) -> u64 {
        let path = self.dir.join("push.toml");
        std::fs::write(&path, policy).expect("write the policy to push");
        let path = path.display().to_string();
        let out = self.operator(&["push", &path]);
        assert!(
            out.status.success(),
            "push: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("push prints JSON");
        v["version"].as_u64().expect("push prints the version")
    }

    /// `bulkheadctl status --json`.
    pub fn status(&self) -> Value {
        let out = self.operator(&["status"]);
        assert!(out.status.success(), "status: {}", out.status);
        serde_json::from_slice(&out.stdout).expect("status prints JSON")
    }

    /// Gateway `id`'s row of the status.
    pub fn gateway_status(&self, id: &str) -> Option<Value> {
        self.status()["gateways"]
            .as_array()?
            .iter()
            .find(|g| g["id"] == id)
            .cloned()
    }

    /// The spec of gateway `k` (1-based): id `gwK`, `[controller]` pointing at the controller.
    pub fn gateway_spec(&self, k: u8, policy: &str) -> GatewaySpec {
        let pki = self.pki();
        let pem = |name: &str| pki.join(name).display().to_string();
        let mut spec = GatewaySpec::new(crate::e2e::bulkhead_bin(), policy);
        spec.id = format!("gw{k}");
        spec.extra_toml = format!(
            "[controller]\nendpoint = \"https://10.250.{k}.1:{CONTROLLER_PORT}\"\n\
             ca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n",
            ca = pem("ca.pem"),
            cert = pem(&format!("gateway-gw{k}.pem")),
            key = pem(&format!("gateway-gw{k}.key")),
        );
        spec
    }

    /// Starts gateway `k` in lab `k`.
    pub fn start_gateway(&self, k: u8, spec: &GatewaySpec) -> GatewayProcess {
        let lab = &self.labs[usize::from(k) - 1];
        GatewayProcess::start(lab, spec).unwrap_or_else(|e| panic!("start gw{k}: {e}"))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_controller();
        if let Err(e) = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status()
        {
            eprintln!("fleet: could not remove namespace {}: {e}", self.netns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway's metric value, or None when the endpoint or the series is missing.
pub fn metric(gw: &GatewayProcess, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = gw.metrics().ok()?;
    bulkhead_lab::gateway::metric_value(&text, name, labels)
}
