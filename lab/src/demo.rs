//! `bulkhead demo`: the gateway at work on a small network of namespaces, in one command.
//!
//! 1. Builds a [lab](crate::Lab): workloads `prod` (a production AI agent,
//!    10.10.1.2) and `dev` (a developer machine, 10.10.2.2), the gateway namespace, and an
//!    "internet" whose TLS server answers several AI-provider names on one address, plus a
//!    command-and-control host.
//! 2. Runs this very binary as `bulkhead run` in the gateway namespace on the built-in sample
//!    policy ([`DEMO_POLICY`], `configs/demo-policy.toml`).
//! 3. Makes real connections with the in-process rustls client (no curl needed), and prints what
//!    the policy says should happen, what did happen, and the rule from the decision record.
//! 4. Opens a long-lived transfer, applies a policy update (SIGHUP) that denies it, and shows the
//!    transfer cut and the `policy_update` record.
//! 5. Removes everything, also on Ctrl-C.
//!
//! The expected outcome of each connection is computed by the policy engine from the same policy
//! file; any difference makes the command exit non-zero.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use policy_engine::{Action, SynDecision, Transport};

use crate::clients::{self, Exchange, Outcome, Request, StreamWatch};
use crate::gateway::{GatewayProcess, GatewaySpec};
use crate::{addr, Testbed};

/// The built-in sample policy.
pub const DEMO_POLICY: &str = include_str!("../../configs/demo-policy.toml");

/// The rule the live update adds.
pub const UPDATE_RULE: &str = r#"
[[rules]]
name = "incident-block-openai"
priority = 1
src = ["any"]
dst = ["openai"]
protocol = "any"
action = "deny"
"#;

/// The names the lab's TLS server answers.
pub const NAMES: &[&str] = &[
    "api.openai.com",
    "api.anthropic.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "exfil.example.net",
];

/// Options of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `bulkhead` binary to run as the gateway.
    pub gateway_binary: PathBuf,
    /// How long a client waits before calling a silent connection timed out.
    pub deny_timeout: Duration,
    /// Print every decision record in full (JSON).
    pub show_records: bool,
}

/// One connection of the demo.
#[derive(Debug, Clone)]
struct Scenario {
    who: &'static str,
    name: &'static str,
    server: SocketAddr,
    note: &'static str,
}

fn scenarios() -> Vec<Scenario> {
    let v4 = SocketAddr::new(IpAddr::V4(addr::SERVER_V4), 443);
    let v6 = SocketAddr::new(IpAddr::V6(addr::SERVER_V6), 443);
    let c2 = SocketAddr::new(IpAddr::V4(addr::C2_V4), 443);
    vec![
        Scenario {
            who: "prod",
            name: "bedrock-runtime.us-east-1.amazonaws.com",
            server: v4,
            note: "",
        },
        Scenario {
            who: "prod",
            name: "api.openai.com",
            server: v4,
            note: "same address",
        },
        Scenario {
            who: "prod",
            name: "exfil.example.net",
            server: v4,
            note: "unknown name",
        },
        Scenario {
            who: "prod",
            name: "api.anthropic.com",
            server: c2,
            note: "C2 address",
        },
        Scenario {
            who: "dev",
            name: "api.openai.com",
            server: v4,
            note: "",
        },
        Scenario {
            who: "dev",
            name: "api.anthropic.com",
            server: v4,
            note: "watched",
        },
        Scenario {
            who: "dev",
            name: "bedrock-runtime.us-east-1.amazonaws.com",
            server: v6,
            note: "IPv6",
        },
        Scenario {
            who: "dev",
            name: "exfil.example.net",
            server: v4,
            note: "unknown name",
        },
    ]
}

/// What the policy engine says about a connection.
#[derive(Debug, Clone)]
struct Expectation {
    outcome: Outcome,
    rule: String,
    detected_by: Option<String>,
}

fn expect(
    policy: &policy_engine::CompiledPolicy,
    src: IpAddr,
    dst: SocketAddr,
    name: &str,
) -> Result<Expectation> {
    let name = policy_engine::normalize_name(name)
        .map_err(|e| anyhow::anyhow!("name {name}: {e:?}"))?
        .into_owned();
    let mut q = policy_engine::Query {
        src,
        dst: dst.ip(),
        transport: Transport::Tcp,
        dst_port: dst.port(),
        name: None,
    };
    let on_syn = matches!(policy.evaluate_without_name(&q), SynDecision::Final(_));
    q.name = Some(&name);
    let v = policy.evaluate(&q);
    let outcome = match v.effective_action {
        Action::Permit => Outcome::Completed,
        Action::Deny => Outcome::TimedOut,
        Action::Reject if on_syn => Outcome::Refused,
        Action::Reject => Outcome::Reset,
    };
    let detected_by = (!v.enforced).then(|| policy.rule_name(v.rule).to_owned());
    Ok(Expectation {
        outcome,
        rule: policy.rule_name(v.effective_rule).to_owned(),
        detected_by,
    })
}

fn verdict_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Completed => "permit",
        Outcome::Reset | Outcome::Refused | Outcome::Unreachable => "reject",
        Outcome::TimedOut => "deny",
        Outcome::Failed(_) => "?",
    }
}

/// Runs the demo. Ok(true) when every connection behaved as the policy says.
pub fn run(opts: &DemoOptions) -> Result<bool> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let loaded =
        policy_engine::load_policy_str(DEMO_POLICY, std::path::Path::new("demo-policy.toml"))
            .map_err(|e| anyhow::anyhow!("the built-in policy does not load: {e}"))?;
    let compiled = policy_engine::compile(&loaded.policy, 1);

    let (tb, gw) = build_and_start(&mut out, opts)?;
    let mut all_ok = connections(&mut out, &tb, &gw, &compiled, opts)?;
    all_ok &= live_update(&mut out, &tb, &gw, opts)?;
    all_ok &= stop_gateway(&mut out, gw)?;
    drop(tb);
    writeln!(out, "Lab removed.")?;
    if all_ok {
        writeln!(out, "Every connection behaved as the policy says.")?;
    } else {
        writeln!(
            out,
            "Some connections did NOT behave as the policy says (see MISMATCH above)."
        )?;
    }
    Ok(all_ok)
}

/// Step 1 and 2: builds the lab, starts the gateway on the demo policy and describes both.
fn build_and_start(out: &mut impl Write, opts: &DemoOptions) -> Result<(Testbed, GatewayProcess)> {
    writeln!(
        out,
        "Bulkhead demo: building the lab (namespaces prod, dev, gateway, internet)..."
    )?;
    let tb = Testbed::build("bhdemo", &["prod", "dev"], NAMES).context("build the lab")?;
    let mut spec = GatewaySpec::new(&opts.gateway_binary, DEMO_POLICY);
    spec.id = "demo-gw".into();
    let gw = GatewayProcess::start(&tb.lab, &spec).context("start the gateway")?;
    writeln!(
        out,
        "  gateway `bulkhead run` pid {} in namespace {}, diverting {}",
        gw.pid(),
        tb.lab.gateway_netns(),
        tb.lab.gateway_interfaces().join(", ")
    )?;
    writeln!(
        out,
        "  internet: TLS server {} / {} answering {}; C2 host {}",
        addr::SERVER_V4,
        addr::SERVER_V6,
        NAMES.join(", "),
        addr::C2_V4
    )?;
    writeln!(
        out,
        "  policy: prod may reach Bedrock only; dev may reach the AI providers (Anthropic under a \
         watch rule); the C2 address is denied; everything else is denied by default.\n"
    )?;
    Ok((tb, gw))
}

/// One connection's line of the table, whether it matched the policy, and its client address.
struct ScenarioResult {
    row: [String; 7],
    ok: bool,
    local: Option<SocketAddr>,
}

/// Step 3: makes every connection of [`scenarios`], prints the table and then the decision
/// records of those connections. True when every outcome matched the policy.
fn connections(
    out: &mut impl Write,
    tb: &Testbed,
    gw: &GatewayProcess,
    compiled: &policy_engine::CompiledPolicy,
    opts: &DemoOptions,
) -> Result<bool> {
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut all_ok = true;
    let mut locals = Vec::new();
    for sc in scenarios() {
        let result = run_scenario(tb, gw, compiled, &sc, opts)?;
        all_ok &= result.ok;
        locals.extend(result.local);
        rows.push(result.row);
    }
    print_table(
        out,
        &[
            "WHO",
            "NAME",
            "POLICY SAYS",
            "WHAT HAPPENED",
            "RULE (LOG)",
            "DISPOSITION",
            "",
        ],
        &rows,
    )?;

    writeln!(
        out,
        "\nDecision records of these connections ({}):",
        gw.decisions_path().display()
    )?;
    std::thread::sleep(Duration::from_millis(200));
    for r in gw.records()? {
        let port = r["src_endpoint"]["port"].as_u64().unwrap_or(0);
        if !locals.iter().any(|l| u64::from(l.port()) == port) {
            continue;
        }
        if opts.show_records {
            writeln!(out, "{r}")?;
        } else {
            writeln!(out, "  {}", summarize(&r))?;
        }
    }
    Ok(all_ok)
}

/// One connection: what the policy engine expects, what the client saw, what the log says.
fn run_scenario(
    tb: &Testbed,
    gw: &GatewayProcess,
    compiled: &policy_engine::CompiledPolicy,
    sc: &Scenario,
    opts: &DemoOptions,
) -> Result<ScenarioResult> {
    let wl = tb.lab.workload(sc.who);
    let src = if sc.server.is_ipv4() {
        IpAddr::V4(wl.v4)
    } else {
        IpAddr::V6(wl.v6)
    };
    let exp = expect(compiled, src, sc.server, sc.name)?;
    let ex: Exchange = clients::fetch(
        &wl.netns,
        Request::https(&tb.client_tls, sc.server, sc.name, "/bytes/65536")
            .timeout(opts.deny_timeout),
    )?;
    let ok = ex.outcome == exp.outcome;
    let record = ex.local.and_then(|local| {
        gw.wait_record(Duration::from_secs(3), |r| {
            r["src_endpoint"]["port"].as_u64() == Some(u64::from(local.port()))
                && matches!(r["activity_id"].as_u64(), Some(1 | 5))
        })
    });
    let (rule, disposition) = match &record {
        Some(r) => (
            r["policy"]["name"].as_str().unwrap_or("?").to_owned(),
            r["disposition"].as_str().unwrap_or("?").to_owned(),
        ),
        None => ("(no record)".into(), "-".into()),
    };
    let expected = match &exp.detected_by {
        Some(w) => format!("{} (watch: {w})", verdict_word(&exp.outcome)),
        None => format!("{} ({})", verdict_word(&exp.outcome), exp.rule),
    };
    let dst = if sc.note.is_empty() {
        sc.name.to_owned()
    } else {
        format!("{} [{}]", sc.name, sc.note)
    };
    let row = [
        format!("{} {}", sc.who, src),
        dst,
        expected,
        format!("{} in {} ms", ex.outcome.word(), ex.elapsed.as_millis()),
        rule,
        disposition,
        if ok { "ok".into() } else { "MISMATCH".into() },
    ];
    Ok(ScenarioResult {
        row,
        ok,
        local: ex.local,
    })
}

/// Step 4: a long transfer from dev to api.openai.com, then a policy update (SIGHUP) that denies
/// it. True when the transfer is reset within 1 s, the `policy_update` record is written and a
/// new connection is denied.
fn live_update(
    out: &mut impl Write,
    tb: &Testbed,
    gw: &GatewayProcess,
    opts: &DemoOptions,
) -> Result<bool> {
    writeln!(
        out,
        "\nLive policy update: dev streams from api.openai.com, then the policy gains rule \
         `incident-block-openai` (SIGHUP)..."
    )?;
    let dev = tb.lab.workload("dev");
    let openai = SocketAddr::new(IpAddr::V4(addr::SERVER_V4), 443);
    let stream = StreamWatch::open(
        &dev.netns,
        Request::https(&tb.client_tls, openai, "api.openai.com", "/stream"),
    )?;
    if !stream.wait_bytes(50_000, Duration::from_secs(10)) {
        writeln!(out, "  the stream did not start: {:?}", stream.ended())?;
        return Ok(false);
    }
    writeln!(out, "  streaming: {} bytes received", stream.bytes())?;
    let updated = format!("{DEMO_POLICY}\n{UPDATE_RULE}");
    let sent = Instant::now();
    gw.reload(&updated)?;
    let mut all_ok = stream_cut(out, &stream, sent)?;
    if let Some(local) = stream.local() {
        match gw.wait_record(Duration::from_secs(3), |r| {
            r["src_endpoint"]["port"].as_u64() == Some(u64::from(local.port()))
                && r["reason"].as_str() == Some("policy_update")
        }) {
            Some(r) if opts.show_records => writeln!(out, "{r}")?,
            Some(r) => writeln!(out, "  {}", summarize(&r))?,
            None => {
                all_ok = false;
                writeln!(out, "  MISMATCH: no policy_update record")?;
            }
        }
    }
    let ex = clients::fetch(
        &dev.netns,
        Request::https(&tb.client_tls, openai, "api.openai.com", "/").timeout(opts.deny_timeout),
    )?;
    let ok = ex.outcome == Outcome::TimedOut;
    all_ok &= ok;
    writeln!(
        out,
        "  a new connection from dev to api.openai.com: {} ({})",
        ex.outcome.word(),
        if ok { "ok, denied" } else { "MISMATCH" }
    )?;
    Ok(all_ok)
}

/// Waits for the open transfer to end after the update `sent` at; true when it was reset
/// within 1 s.
fn stream_cut(out: &mut impl Write, stream: &StreamWatch, sent: Instant) -> Result<bool> {
    match stream.wait_end(Duration::from_secs(5)) {
        Some((outcome, at)) => {
            let took = at.duration_since(sent);
            let ok = outcome == Outcome::Reset && took < Duration::from_secs(1);
            writeln!(
                out,
                "  the open transfer ended ({}) {} ms after the update, after {} bytes: {}",
                outcome.word(),
                took.as_millis(),
                stream.bytes(),
                if ok {
                    "ok"
                } else {
                    "MISMATCH (expected a reset within 1 s)"
                }
            )?;
            Ok(ok)
        }
        None => {
            writeln!(out, "  MISMATCH: the open transfer was not cut within 5 s")?;
            Ok(false)
        }
    }
}

/// Step 5: stops the gateway with SIGTERM. True when it exited successfully.
fn stop_gateway(out: &mut impl Write, mut gw: GatewayProcess) -> Result<bool> {
    match gw.stop(Duration::from_secs(10)) {
        Ok(status) if status.success() => {
            writeln!(out, "\nGateway stopped (SIGTERM), routing removed.")?;
            Ok(true)
        }
        Ok(status) => {
            writeln!(out, "\nThe gateway exited with {status}:\n{}", gw.output())?;
            Ok(false)
        }
        Err(e) => {
            writeln!(out, "\nStopping the gateway: {e}")?;
            Ok(false)
        }
    }
}

/// One line per record: time, activity, verdict, who, where, rule, reason.
fn summarize(r: &serde_json::Value) -> String {
    let activity = match r["activity_id"].as_u64() {
        Some(1) => "open",
        Some(2) => "close",
        Some(5) => "refuse",
        _ => "?",
    };
    let host = r["dst_endpoint"]["hostname"].as_str().unwrap_or("-");
    let mut s = format!(
        "{activity:<6} {:<7} {:<9} {}:{} -> {} [{}]:{} rule={} reason={} version={}",
        r["action"].as_str().unwrap_or("?"),
        r["disposition"].as_str().unwrap_or("?"),
        r["src_endpoint"]["ip"].as_str().unwrap_or("?"),
        r["src_endpoint"]["port"],
        host,
        r["dst_endpoint"]["ip"].as_str().unwrap_or("?"),
        r["dst_endpoint"]["port"],
        r["policy"]["name"].as_str().unwrap_or("?"),
        r["reason"].as_str().unwrap_or("?"),
        r["policy"]["version"],
    );
    if let Some(t) = r.get("traffic").filter(|t| !t.is_null()) {
        s.push_str(&format!(
            " bytes_out={} bytes_in={}",
            t["bytes_out"], t["bytes_in"]
        ));
    }
    s
}

fn print_table(out: &mut impl Write, header: &[&str; 7], rows: &[[String; 7]]) -> Result<()> {
    let mut w = header.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    writeln!(
        out,
        "{}",
        line(
            w.iter()
                .map(|n| "-".repeat(*n))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect()
        )
    )?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Checks what the demo needs before it starts: root, and the tools it calls (`ip`, `sysctl`).
pub fn preflight() -> Result<()> {
    if !crate::netns::is_root() {
        bail!(
            "`bulkhead demo` builds network namespaces, veth pairs and a TUN device: run it as root \
             (for example `sudo bulkhead demo`) on a Linux machine"
        );
    }
    for tool in ["ip", "sysctl"] {
        let found = std::process::Command::new(tool)
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!("`bulkhead demo` needs `{tool}` (iproute2 / procps) on the PATH");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policy_loads_and_says_what_the_demo_shows() {
        let loaded = policy_engine::load_policy_str(DEMO_POLICY, std::path::Path::new("demo.toml"))
            .expect("the demo policy is valid");
        let p = policy_engine::compile(&loaded.policy, 1);
        let prod = IpAddr::V4(addr::workload_v4(0));
        let dev = IpAddr::V4(addr::workload_v4(1));
        let v4 = SocketAddr::new(IpAddr::V4(addr::SERVER_V4), 443);
        let c2 = SocketAddr::new(IpAddr::V4(addr::C2_V4), 443);
        let e = |src, dst, name| expect(&p, src, dst, name).unwrap();
        let bedrock = "bedrock-runtime.us-east-1.amazonaws.com";
        assert_eq!(e(prod, v4, bedrock).outcome, Outcome::Completed);
        assert_eq!(e(prod, v4, "api.openai.com").outcome, Outcome::Reset);
        assert_eq!(e(prod, v4, "exfil.example.net").outcome, Outcome::TimedOut);
        let c = e(prod, c2, "api.anthropic.com");
        assert_eq!(
            (c.outcome, c.rule.as_str()),
            (Outcome::TimedOut, "block-c2")
        );
        assert_eq!(e(dev, v4, "api.openai.com").outcome, Outcome::Completed);
        let w = e(dev, v4, "api.anthropic.com");
        assert_eq!(w.outcome, Outcome::Completed);
        assert_eq!(w.detected_by.as_deref(), Some("watch-dev-to-anthropic"));
        assert_eq!(e(dev, v4, "exfil.example.net").outcome, Outcome::TimedOut);
        // The update denies dev's OpenAI traffic.
        let updated = format!("{DEMO_POLICY}\n{UPDATE_RULE}");
        let loaded = policy_engine::load_policy_str(&updated, std::path::Path::new("u.toml"))
            .expect("the update is valid");
        let u = policy_engine::compile(&loaded.policy, 2);
        let x = expect(&u, dev, v4, "api.openai.com").unwrap();
        assert_eq!(
            (x.outcome, x.rule.as_str()),
            (Outcome::TimedOut, "incident-block-openai")
        );
    }
}
