//! `bulkhead explain`: the verdict a policy gives one connection, and why.
//!
//! The verdict comes from the compiled table, exactly as the gateway computes it; the walk
//! through the rules ("which earlier rules did not match, and why") comes from the reference
//! evaluator. The two are checked against each other.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::input::echo;
use crate::runtime::policy::load_policy_file;
use anyhow::bail;
use policy_engine::naive::{self, RuleMatch};
use policy_engine::{
    compile, normalize_name, Action, CompiledPolicy, DstSpec, Mode, Policy, Ports, Query, Rule,
    RuleRef, SrcSpec, SynDecision, Transport, Verdict,
};
use serde::Serialize;

/// Arguments of `bulkhead explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (TOML).
    #[arg(long, value_name = "POLICY.toml")]
    pub policy: PathBuf,
    /// Source address of the connection.
    #[arg(long, value_name = "IP")]
    pub src: IpAddr,
    /// Destination address and port (`192.0.2.1:443`, `[2001:db8::1]:443`). The port is
    /// required for tcp and udp; other transports take a bare address.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_dst)]
    pub dst: Dst,
    /// The TLS server name (SNI) the client sent.
    #[arg(long, value_name = "NAME", conflicts_with = "host")]
    pub sni: Option<String>,
    /// The HTTP Host the client sent (a `:PORT` suffix is ignored).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Transport: tcp, udp, or an IP protocol number (1 for ICMP, ...).
    #[arg(long, value_name = "tcp|udp|NUMBER", default_value = "tcp", value_parser = parse_proto)]
    pub proto: Transport,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A destination as written on the command line: the port is kept optional here so that a
/// missing one can be refused for the transports that have ports (see [`Dst::port_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dst {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl Dst {
    /// The port to evaluate with: required for tcp and udp, 0 for transports without ports.
    fn port_for(&self, proto: Transport) -> Result<u16, String> {
        if !proto.has_ports() {
            return Ok(0);
        }
        match (self.port, self.ip) {
            (Some(p), _) => Ok(p),
            (None, IpAddr::V6(a)) => Err(format!(
                "--dst {a} has no port; an IPv6 destination takes its port after brackets: \
                 [{a}]:PORT (`2001:db8::1:443` is the address 2001:db8::1:443, not port 443)"
            )),
            (None, IpAddr::V4(a)) => Err(format!(
                "--dst {a} has no port; {proto} needs one: {a}:PORT"
            )),
        }
    }
}

pub fn parse_dst(s: &str) -> Result<Dst, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(Dst {
            ip: sa.ip(),
            port: Some(sa.port()),
        });
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(Dst { ip, port: None }),
        Err(_) => Err(format!(
            "`{}` is not IP:PORT (for example 192.0.2.1:443 or [2001:db8::1]:443)",
            crate::input::echo(s)
        )),
    }
}

fn parse_proto(s: &str) -> Result<Transport, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Transport::Tcp),
        "udp" => Ok(Transport::Udp),
        "icmp" => Ok(Transport::Other(1)),
        "icmpv6" | "ipv6-icmp" => Ok(Transport::Other(58)),
        other => other
            .parse::<u8>()
            .map(Transport::from_protocol_number)
            .map_err(|_| {
                format!(
                    "`{}` is not tcp, udp, icmp or an IP protocol number",
                    crate::input::echo(s)
                )
            }),
    }
}

/// One rule looked at, and what became of it.
#[derive(Debug, Serialize)]
struct Considered {
    rule: String,
    priority: u32,
    watch: bool,
    matched: bool,
    /// Why it did not match; for a match, what it did.
    why: String,
}

/// The JSON form of an explanation.
#[derive(Debug, Serialize)]
struct Explanation {
    action: &'static str,
    enforced: bool,
    rule: String,
    effective_action: &'static str,
    effective_rule: String,
    log: bool,
    mode: &'static str,
    src_groups: Vec<String>,
    dst_groups: Vec<String>,
    name: Option<String>,
    name_source: Option<&'static str>,
    /// `rule` or `default`, as in the decision log.
    reason: &'static str,
    /// One sentence for a person.
    summary: String,
    /// `final` when the verdict can be given on the SYN, `needs_name` when the name decides.
    on_syn: &'static str,
    /// How the gateway corroborates the name with DNS before it lets this connection through:
    /// `enforce`, `log`, or `off` (the setting is off, or the verdict does not permit because
    /// of the name).
    sni_dns_check: &'static str,
    considered: Vec<Considered>,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let port = match args.dst.port_for(args.proto) {
        Ok(p) => p,
        Err(e) => return Ok(fail(&args, EXIT_USAGE, &[e])),
    };
    let loaded = match load_policy_file(&args.policy) {
        Ok(l) => l,
        Err(err) => {
            if args.json {
                println!("{}", super::check_policy::invalid_json(&args.policy, &err));
            } else {
                super::check_policy::report_invalid(&args.policy, &err);
            }
            return Ok(ExitCode::from(super::check_policy::EXIT_INVALID));
        }
    };
    let (raw_name, name_source) = match (&args.sni, &args.host) {
        (Some(n), _) => (Some(n.as_str()), Some("sni")),
        (None, Some(n)) => (Some(strip_port(n)), Some("http_host")),
        (None, None) => (None, None),
    };
    let name = match raw_name.map(normalize_name).transpose() {
        Ok(n) => n.map(|n| n.into_owned()),
        Err(e) => {
            let msg = format!(
                "invalid name `{}`: {}",
                echo(raw_name.unwrap_or("")),
                echo(&e.to_string())
            );
            return Ok(fail(&args, EXIT_USAGE, &[msg]));
        }
    };
    let policy = &loaded.policy;
    let compiled = compile(policy, 0);
    let q = Query {
        src: args.src,
        dst: args.dst.ip,
        transport: args.proto,
        dst_port: port,
        name: name.as_deref(),
    };
    let verdict = compiled.evaluate(&q);
    let reference = naive::evaluate(policy, &q);
    if (reference.rule, reference.effective_rule) != (verdict.rule, verdict.effective_rule) {
        bail!(
            "internal inconsistency: the compiled table chose {:?}/{:?}, the reference evaluator {:?}/{:?}",
            verdict.rule,
            verdict.effective_rule,
            reference.rule,
            reference.effective_rule
        );
    }
    let considered = consider(policy, &q, &verdict);
    let on_syn = match compiled.evaluate_without_name(&q) {
        SynDecision::Final(_) => "final",
        SynDecision::NeedsName => "needs_name",
    };
    let sni_dns_check = compiled.name_check(&q, &verdict);
    let explanation = Explanation {
        action: verdict.action.as_str(),
        enforced: verdict.enforced,
        rule: compiled.rule_name(verdict.rule).to_owned(),
        effective_action: verdict.effective_action.as_str(),
        effective_rule: compiled.rule_name(verdict.effective_rule).to_owned(),
        log: verdict.log,
        mode: policy.mode.as_str(),
        src_groups: compiled.src_groups(&verdict).map(str::to_owned).collect(),
        dst_groups: compiled.dst_groups(&verdict).map(str::to_owned).collect(),
        name: name.clone(),
        name_source,
        reason: match verdict.rule {
            RuleRef::Rule(_) => "rule",
            RuleRef::Default => "default",
        },
        summary: summary(&compiled, policy, &verdict),
        on_syn,
        sni_dns_check: sni_dns_check.as_str(),
        considered,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", render(&explanation, &args, port));
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status for arguments that cannot be evaluated (a missing port, an invalid name).
const EXIT_USAGE: u8 = 2;

/// Reports an error in the requested form: with `--json` one object on standard output
/// (`{"error": true, "errors": [{"message"}]}`) so a script reading it is never handed plain
/// text, else `bulkhead: error: ...` lines on standard error.
fn fail(args: &Args, code: u8, messages: &[String]) -> ExitCode {
    if args.json {
        let errors: Vec<_> = messages
            .iter()
            .map(|m| serde_json::json!({ "message": m }))
            .collect();
        println!("{}", serde_json::json!({ "error": true, "errors": errors }));
    } else {
        for m in messages {
            eprintln!("bulkhead: error: {m}");
        }
    }
    ExitCode::from(code)
}

fn summary(compiled: &CompiledPolicy, policy: &Policy, v: &Verdict) -> String {
    let who = |r: RuleRef| match r {
        RuleRef::Rule(_) => format!("rule `{}`", compiled.rule_name(r)),
        RuleRef::Default => "the default action".to_owned(),
    };
    let mut s = format!("{} by {}", v.action, who(v.rule));
    if v.rule != v.effective_rule {
        let _ = write!(
            s,
            " (a watch rule: reported, not enforced); enforced: {} by {}",
            policy_action(policy, v.effective_rule),
            who(v.effective_rule)
        );
    }
    if policy.mode == Mode::LogOnly {
        s.push_str("; the policy is in log-only mode: the connection is forwarded and logged");
    }
    s
}

fn policy_action(policy: &Policy, r: RuleRef) -> Action {
    match r {
        RuleRef::Rule(i) => policy.rules[i as usize].action,
        RuleRef::Default => policy.default_action.action(),
    }
}

fn src_names(policy: &Policy, rule: &Rule) -> String {
    match &rule.src {
        SrcSpec::Any => "any".to_owned(),
        SrcSpec::Groups(g) => g
            .iter()
            .map(|&i| policy.smartgroups[i as usize].name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn dst_names(policy: &Policy, rule: &Rule) -> String {
    match &rule.dst {
        DstSpec::Any => "any".to_owned(),
        DstSpec::Groups(g) => g
            .iter()
            .map(|&d| policy.dst_group_name(d))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn why_not(policy: &Policy, rule: &Rule, q: &Query<'_>, m: &RuleMatch) -> String {
    let mut reasons = Vec::new();
    if !m.src {
        reasons.push(format!(
            "source {} is not in {}",
            q.src,
            src_names(policy, rule)
        ));
    }
    if !(m.dst_by_address || m.dst_by_name) {
        let mut r = format!(
            "destination {} is not in {}",
            q.dst,
            dst_names(policy, rule)
        );
        if m.dst_has_names {
            match q.name {
                Some(n) => {
                    let _ = write!(r, ", and the name {n} matches none of its webgroups");
                }
                None => r.push_str(", and no name is known to match its webgroups"),
            }
        }
        reasons.push(r);
    }
    if !m.protocol {
        reasons.push(format!(
            "transport {} is not {}",
            q.transport,
            rule.protocol.as_str()
        ));
    }
    if m.protocol && !m.ports {
        if let Ports::Ranges(ranges) = &rule.ports {
            let list: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
            if q.transport.has_ports() {
                reasons.push(format!("port {} is not in {}", q.dst_port, list.join(", ")));
            } else {
                reasons.push(format!(
                    "transport {} has no ports and the rule needs {}",
                    q.transport,
                    list.join(", ")
                ));
            }
        }
    }
    reasons.join("; ")
}

fn consider(policy: &Policy, q: &Query<'_>, v: &Verdict) -> Vec<Considered> {
    let last = v
        .effective_rule
        .index()
        .map_or(policy.rules.len(), |i| i as usize + 1);
    policy.rules[..last]
        .iter()
        .map(|rule| {
            let m = naive::rule_match(policy, rule, q);
            let matched = m.matches();
            let why = if matched {
                let how = if m.dst_by_address {
                    "by address"
                } else {
                    "by name"
                };
                if rule.watch {
                    format!(
                        "matches ({how}); watch rule: would {}, reported only",
                        rule.action
                    )
                } else {
                    format!("matches ({how}): {}", rule.action)
                }
            } else {
                why_not(policy, rule, q, &m)
            };
            Considered {
                rule: rule.name.clone(),
                priority: rule.priority,
                watch: rule.watch,
                matched,
                why,
            }
        })
        .collect()
}

fn render(e: &Explanation, args: &Args, port: u16) -> String {
    let mut out = String::new();
    let enforced = if e.enforced {
        "enforced".to_owned()
    } else if e.mode == "log-only" {
        "not enforced: log-only mode".to_owned()
    } else {
        format!(
            "not enforced: watch rule; the gateway applies {} by {}",
            e.effective_action, e.effective_rule
        )
    };
    let _ = writeln!(out, "verdict:      {} ({enforced})", e.action);
    let _ = writeln!(out, "rule:         {}", e.rule);
    let _ = writeln!(out, "why:          {}", e.summary);
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_owned()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "source:       {} in {}", args.src, list(&e.src_groups));
    let proto = match args.proto {
        Transport::Tcp | Transport::Udp => {
            format!("{}:{port} {}", fmt_ip(args.dst.ip), args.proto)
        }
        other => format!("{} {other}", fmt_ip(args.dst.ip)),
    };
    let _ = writeln!(out, "destination:  {proto} in {}", list(&e.dst_groups));
    match (&e.name, e.name_source) {
        (Some(n), Some(src)) => {
            let _ = writeln!(
                out,
                "name:         {n} (from {})",
                if src == "sni" { "TLS SNI" } else { "HTTP Host" }
            );
        }
        _ => {
            let _ = writeln!(out, "name:         (none)");
        }
    }
    let _ = writeln!(
        out,
        "on the SYN:   {}",
        if e.on_syn == "final" {
            "decided without waiting for a name"
        } else {
            "the name decides: data is held until the SNI / Host is seen"
        }
    );
    let _ = writeln!(
        out,
        "dns check:    {}",
        match e.sni_dns_check {
            "enforce" =>
                "enforce: held until DNS says the name resolves to this address; refused if not",
            "log" =>
                "log: forwarded; logged as Detected if the name does not resolve to this address",
            _ => "none (the check is off, or the name did not decide the permit)",
        }
    );
    let _ = writeln!(out, "log:          {}", if e.log { "yes" } else { "no" });
    if e.considered.is_empty() {
        let _ = writeln!(out, "rules:        none before the default");
    } else {
        let _ = writeln!(out, "rules, in order:");
        for c in &e.considered {
            let mark = if c.matched { "match" } else { "no" };
            let _ = writeln!(
                out,
                "  [{mark:>5}] {} (priority {}{}): {}",
                c.rule,
                c.priority,
                if c.watch { ", watch" } else { "" },
                c.why
            );
        }
    }
    if e.effective_rule == "default" {
        let _ = writeln!(out, "no enforcing rule matched: the default action applies");
    }
    out
}

fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// `host:8080` -> `host`, as the gateway reads a Host header; anything else unchanged.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    }
}
