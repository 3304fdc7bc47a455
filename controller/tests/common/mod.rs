//! A controller on a real socket with real mutual TLS, operator and gateway clients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_controller::certs::{init, issue, Subject};
use bulkhead_controller::config::ControllerConfig;
use bulkhead_controller::server::{start, Options, Running};
use bulkhead_gateway::control::{ClientConfig, ClientTls, ControlHandle, PolicyUpdate};
use control_proto::v1::gateway_message::Message as Out;
use control_proto::v1::operator_client::OperatorClient;
use control_proto::v1::policy_distribution_client::PolicyDistributionClient;
use control_proto::v1::{ControllerMessage, GatewayMessage, Hello};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const POLICY: &str = r#"
[policy]
default_action = "deny"

[smartgroups.prod-agents]
cidrs = ["10.9.0.0/16"]
selectors = [{ tags = { env = "prod" } }]

[smartgroups.dev-agents]
selectors = [{ tags = { env = "dev" } }]

[webgroups.openai]
domains = ["api.openai.com"]

[[rules]]
name = "prod-to-openai"
priority = 100
src = ["prod-agents"]
dst = ["openai"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;

pub fn inventory(prod_ip: &str, dev_ip: &str) -> String {
    format!(
        "[[workloads]]\nname = \"agent-a\"\nips = [\"{prod_ip}\"]\ntags = {{ env = \"prod\" }}\n\
         [[workloads]]\nname = \"agent-b\"\nips = [\"{dev_ip}\"]\ntags = {{ env = \"dev\" }}\n"
    )
}

/// A lab PKI in a temporary directory.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        init(&dir).unwrap();
        issue(
            &dir,
            &Subject::Controller(vec!["localhost".into(), "127.0.0.1".into()]),
        )
        .unwrap();
        issue(&dir, &Subject::Operator("alice".into())).unwrap();
        Pki { dir }
    }

    pub fn gateway(&self, id: &str) -> (Vec<u8>, Vec<u8>) {
        let cert = self.dir.join(format!("gateway-{id}.pem"));
        if !cert.exists() {
            issue(&self.dir, &Subject::Gateway(id.into())).unwrap();
        }
        self.pair(&format!("gateway-{id}"))
    }

    pub fn pair(&self, stem: &str) -> (Vec<u8>, Vec<u8>) {
        (
            std::fs::read(self.dir.join(format!("{stem}.pem"))).unwrap(),
            std::fs::read(self.dir.join(format!("{stem}.key"))).unwrap(),
        )
    }

    pub fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.pem")).unwrap()
    }
}

pub struct Lab {
    pub root: PathBuf,
    pub pki: Pki,
    pub running: Option<Running>,
    stop: Option<oneshot::Sender<()>>,
}

impl Lab {
    /// A controller whose controller.toml names `policy` / `inventory` files if given.
    pub async fn start(root: &Path, policy: bool, inventory: bool) -> Lab {
        let pki = Pki::new(root);
        let mut lab = Lab {
            root: root.to_path_buf(),
            pki,
            running: None,
            stop: None,
        };
        let mut text = String::from(
            "[controller]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/controller.pem\"\nkey = \"pki/controller.key\"\n",
        );
        text.push_str("[policy]\n");
        if policy {
            text.push_str("file = \"policy.toml\"\n");
        }
        if inventory {
            text.push_str("inventory = \"inventory.toml\"\n");
        }
        std::fs::write(root.join("controller.toml"), text).unwrap();
        lab.restart().await;
        lab
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(10), running.join())
                .await
                .expect("the controller stops")
                .unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let config = ControllerConfig::load(&self.root.join("controller.toml")).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let options = Options {
            poll_interval: Duration::from_millis(100),
            hello_timeout: Duration::from_secs(2),
        };
        let running = start(&config, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        self.running = Some(running);
        self.stop = Some(stop);
    }

    pub fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.running.as_ref().unwrap().addr.port()
        )
    }

    pub async fn channel(
        &self,
        ca: Vec<u8>,
        identity: Option<(Vec<u8>, Vec<u8>)>,
        domain: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(domain);
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(self.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
    }

    pub async fn operator(&self) -> OperatorClient<Channel> {
        let channel = self
            .channel(
                self.pki.ca(),
                Some(self.pki.pair("operator-alice")),
                "127.0.0.1",
            )
            .await
            .unwrap();
        OperatorClient::new(channel)
    }

    /// A raw gateway stream: sends `hello_id` in the Hello with the certificate of `cert_id`.
    pub async fn raw_gateway(
        &self,
        cert_id: &str,
        hello_id: &str,
    ) -> Result<
        (
            mpsc::Sender<GatewayMessage>,
            tonic::Streaming<ControllerMessage>,
        ),
        tonic::Status,
    > {
        let channel = self
            .channel(self.pki.ca(), Some(self.pki.gateway(cert_id)), "127.0.0.1")
            .await
            .unwrap();
        let mut client =
            PolicyDistributionClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(16);
        tx.send(GatewayMessage {
            message: Some(Out::Hello(Hello {
                gateway_id: hello_id.into(),
                build_version: "test".into(),
                enforced_version: 0,
            })),
        })
        .await
        .unwrap();
        let inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok((tx, inbound))
    }

    /// A gateway running the real client module; `refuse` makes its apply function fail.
    pub fn gateway(&self, id: &str, refuse: Option<&'static str>) -> TestGateway {
        let (cert, key) = self.pki.gateway(id);
        let state_dir = self.root.join(format!("gw-{id}"));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&applied);
        let config = ClientConfig {
            endpoint: self.url(),
            gateway_id: id.into(),
            build_version: "1.2.3".into(),
            tls: ClientTls {
                ca: self.pki.ca(),
                cert,
                key,
            },
            state_dir: state_dir.clone(),
            enforced_version: 0,
            enforced_digest: String::new(),
        };
        let handle = bulkhead_gateway::control::spawn(config, move |update: PolicyUpdate| {
            if let Some(reason) = refuse {
                return Err(reason.to_string());
            }
            sink.lock().unwrap().push(update);
            Ok(())
        });
        TestGateway {
            handle: Some(handle),
            applied,
            state_dir,
        }
    }
}

pub struct TestGateway {
    pub handle: Option<ControlHandle>,
    pub applied: Arc<Mutex<Vec<PolicyUpdate>>>,
    pub state_dir: PathBuf,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

/// Polls `check` until it is true or 15 s passed.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn bundle(text: &str) -> control_proto::v1::PolicyBundle {
    control_proto::v1::PolicyBundle {
        name: "policy.toml".into(),
        text: text.into(),
        includes: Vec::new(),
    }
}
