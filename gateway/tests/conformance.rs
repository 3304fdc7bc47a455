//! SNI conformance on real traffic: every TCP capture of the project's `testdata/manifest.tsv`
//! (and of the extra corpus's, when present: see `bulkhead_testkit::corpus`) is replayed through
//! the pipeline (the same code `bulkhead replay` runs), and every TCP payload of the
//! `payloads/manifest.tsv` files is wrapped into a synthetic TCP flow; the TLS server names found,
//! in order, must be the expected ones (`-` = no name may be found).
//!
//! Each capture is replayed under two policies: one that permits everything on the SYN (names are
//! found by watching the flow) and one whose verdict needs the name (client data is held until the
//! name is known: the inspection path). Both must find the same names.
//!
//! The manifest lists the names of a few captures once each, in order of first appearance (for
//! example `tls-subjectaltname`, whose 40 ClientHellos carry 20 distinct names). A row whose
//! expected names are all distinct also matches when the names found, reduced the same way,
//! equal them; the summary marks those rows `distinct`.

use std::path::Path;

use bulkhead_gateway::cli::replay::replay;
use bulkhead_gateway::pipeline::Disposition;
use bulkhead_testkit::corpus::extra_corpus;
use bulkhead_testkit::*;

/// Needs the name: client data is held until it is known.
const POLICY_HOLD: &str = r#"
[policy]
default_action = "deny"

[webgroups.never]
domains = ["never.invalid"]

[[rules]]
name = "deny-never"
priority = 1
src = ["any"]
dst = ["never"]
action = "deny"

[[rules]]
name = "everything"
priority = 2
src = ["any"]
dst = ["any"]
protocol = "any"
action = "permit"
log = true
"#;

fn distinct(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// `Some(note)` when `found` matches `expected`.
fn matches(expected: &[String], found: &[String]) -> Option<&'static str> {
    if found == expected {
        return Some("exact");
    }
    if distinct(expected).len() == expected.len() && distinct(found) == expected {
        return Some("distinct");
    }
    None
}

struct Row {
    file: String,
    expected: String,
    found_watch: String,
    found_hold: String,
    verdict: &'static str,
}

fn print_table(rows: &[Row]) {
    let w = rows.iter().map(|r| r.file.len()).max().unwrap_or(4).min(70);
    eprintln!(
        "\n{:<w$}  {:<8}  {:<40}  FOUND",
        "FILE", "RESULT", "EXPECTED"
    );
    for r in rows {
        let mut exp = r.expected.clone();
        if exp.len() > 40 {
            exp.truncate(37);
            exp.push_str("...");
        }
        let found = if r.found_watch == r.found_hold {
            r.found_watch.clone()
        } else {
            format!("watch: {} | hold: {}", r.found_watch, r.found_hold)
        };
        let mut found = found;
        if found.len() > 100 && r.verdict != "MISMATCH" {
            found.truncate(97);
            found.push_str("...");
        }
        let file: String = r.file.chars().take(70).collect();
        eprintln!("{file:<w$}  {:<8}  {exp:<40}  {found}", r.verdict);
    }
    let bad = rows.iter().filter(|r| r.verdict == "MISMATCH").count();
    eprintln!(
        "\n{} rows, {} matched, {} mismatched\n",
        rows.len(),
        rows.len() - bad,
        bad
    );
}

fn names_from_replay(capture: &Path, policy_text: &str) -> anyhow::Result<Vec<String>> {
    let r = replay(
        policy(policy_text, 1),
        &[capture.to_path_buf()],
        "conformance",
        false,
    )?;
    anyhow::ensure!(r
        .records
        .iter()
        .all(|x| x.name().is_none() || x.tls.is_some() || x.http.is_some()));
    Ok(r.records
        .iter()
        .filter_map(|x| x.tls.as_ref().map(|t| t.sni.clone()))
        .collect())
}

#[test]
fn captures_yield_the_expected_names() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for row in captures() {
        if row.transport != "TCP" {
            continue; // QUIC rows come with QUIC inspection.
        }
        let expected = row.expected_names();
        let watch = names_from_replay(&row.path, POLICY_PERMIT_ALL)?;
        let hold = names_from_replay(&row.path, POLICY_HOLD)?;
        let verdict = match (matches(&expected, &watch), matches(&expected, &hold)) {
            (Some("exact"), Some("exact")) => "ok",
            (Some(_), Some(_)) => "distinct",
            _ => "MISMATCH",
        };
        rows.push(Row {
            file: row.label(),
            expected: row.expected.clone(),
            found_watch: if watch.is_empty() {
                "-".into()
            } else {
                watch.join(",")
            },
            found_hold: if hold.is_empty() {
                "-".into()
            } else {
                hold.join(",")
            },
            verdict,
        });
    }
    print_table(&rows);
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == "MISMATCH")
        .map(|r| r.file.as_str())
        .collect();
    anyhow::ensure!(bad.is_empty(), "name mismatches: {bad:?}");
    // testdata/ alone has 15 TCP captures; the extra corpus adds more than 50.
    let least = if extra_corpus().is_some() { 65 } else { 15 };
    anyhow::ensure!(
        rows.len() >= least,
        "only {} TCP rows in the manifests",
        rows.len()
    );
    Ok(())
}

/// Feeds `payload` as the first client bytes of a TCP flow, in segments of `mss` bytes, and
/// returns (TLS names, HTTP hosts) of the decisions.
fn names_from_payload(payload: &[u8], mss: usize, policy_text: &str) -> (Vec<String>, Vec<String>) {
    let mut h = Harness::new(policy_text);
    let c = Conn::v4(40000);
    handshake(&mut h, &c);
    for (i, seg) in payload.chunks(mss).enumerate() {
        let d = h.send(&c.data((i * mss) as u32, seg));
        assert!(
            matches!(d, Disposition::Forward | Disposition::Held),
            "segment {i}: {d:?}"
        );
    }
    // Let a flow that never completes its hello run into its bound.
    h.send(&c.fin(payload.len() as u32));
    let tls = h
        .decisions()
        .iter()
        .filter_map(|r| r.tls.as_ref().map(|t| t.sni.clone()))
        .collect();
    let http = h
        .decisions()
        .iter()
        .filter_map(|r| r.http.as_ref().map(|t| t.host.clone()))
        .collect();
    (tls, http)
}

#[test]
fn payloads_yield_the_expected_names() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for row in payloads(&[]) {
        if row.transport != "TCP" {
            continue;
        }
        let payload = row.bytes();
        let expected = row.expected_names();
        let mut verdict = "ok";
        let mut found = String::new();
        for policy_text in [POLICY_PERMIT_ALL, POLICY_HOLD] {
            for mss in [1460, 536, 1] {
                let (tls, http) = names_from_payload(&payload, mss, policy_text);
                if tls != expected {
                    verdict = "MISMATCH";
                }
                found = if tls.is_empty() {
                    "-".into()
                } else {
                    tls.join(",")
                };
                if !http.is_empty() {
                    found.push_str(&format!(" (http host {})", http.join(",")));
                }
            }
        }
        rows.push(Row {
            file: row.label(),
            expected: row.expected.clone(),
            found_watch: found.clone(),
            found_hold: found,
            verdict,
        });
    }
    print_table(&rows);
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == "MISMATCH")
        .map(|r| r.file.as_str())
        .collect();
    anyhow::ensure!(bad.is_empty(), "name mismatches: {bad:?}");
    anyhow::ensure!(rows.len() >= 14, "only {} TCP payloads", rows.len());
    Ok(())
}

#[test]
fn the_plain_http_payloads_are_named_by_their_host() {
    let payload = testdata_payload("client__curl_http.bin");
    let (tls, http) = names_from_payload(&payload, 1460, POLICY_HOLD);
    assert!(tls.is_empty());
    assert_eq!(http, vec!["api.openai.com".to_owned()]);
    if let Some(extra) = extra_corpus() {
        let payload = std::fs::read(extra.join("payloads/zapret__http_iana_org.bin"))
            .expect("the extra corpus's HTTP request");
        let (tls, http) = names_from_payload(&payload, 1460, POLICY_HOLD);
        assert!(tls.is_empty());
        // The request says `Host: www.iana.org` (the manifest note names the site).
        assert_eq!(http, vec!["www.iana.org".to_owned()]);
    }
}
