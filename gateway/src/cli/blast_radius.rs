//! `bulkhead blast-radius --policy FILE [--group NAME] [--json]`: per SmartGroup, what a
//! compromised member may reach, through which rule, observed by which watch rule, and what is
//! wider than it looks. The analysis is `policy_engine::least::blast`; this module loads the
//! policy, the embedded exfiltration catalog, and prints.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use policy_engine::least::blast::{blast_radius, BlastRadius};
use policy_engine::least::catalog::Catalog;

use crate::input::echo;
use crate::runtime::policy::load_policy_file;

/// Arguments of `bulkhead blast-radius`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (TOML).
    #[arg(long, value_name = "POLICY.toml")]
    pub policy: PathBuf,
    /// Only this SmartGroup.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Print one JSON object: `{"groups": [{"name", "reach": [...], "flags": [...]}]}`.
    #[arg(long)]
    pub json: bool,
}

/// The exfiltration-capable destinations catalog (`configs/webgroups/exfiltration.toml`),
/// compiled in so that every copy of the command flags the same destinations without reading
/// files at run time.
pub fn exfiltration_catalog() -> Catalog {
    // The catalog is tested to load (gateway/tests/least_privilege.rs); an empty catalog here
    // would only mean fewer flags, never a wrong verdict.
    Catalog::parse(include_str!("../../../configs/webgroups/exfiltration.toml")).unwrap_or_default()
}

/// Runs `bulkhead blast-radius`.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match load_policy_file(&args.policy) {
        Ok(l) => l,
        Err(err) => {
            super::check_policy::report_invalid(&args.policy, &err);
            return Ok(ExitCode::from(super::check_policy::EXIT_INVALID));
        }
    };
    let catalog = exfiltration_catalog();
    let Some(radius) = blast_radius(&loaded.policy, &catalog, args.group.as_deref()) else {
        eprintln!(
            "bulkhead: error: `{}` is not a smartgroup of the policy",
            echo(args.group.as_deref().unwrap_or(""))
        );
        return Ok(ExitCode::from(2));
    };
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if args.json {
        writeln!(w, "{}", serde_json::to_string_pretty(&radius)?)?;
    } else {
        print_table(&mut w, &radius)?;
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_table(w: &mut dyn Write, radius: &BlastRadius) -> std::io::Result<()> {
    if radius.groups.is_empty() {
        writeln!(w, "the policy has no smartgroups")?;
    }
    for g in &radius.groups {
        writeln!(w, "{}  (exposure {})", g.name, g.exposure)?;
        if g.reach.is_empty() {
            writeln!(w, "  reaches nothing: every connection is denied")?;
        } else {
            let rows: Vec<[String; 5]> = g
                .reach
                .iter()
                .map(|r| {
                    let mut dst = r.dst.clone();
                    if !r.except.is_empty() {
                        dst.push_str(&format!(" except {}", r.except.join(",")));
                    }
                    [
                        dst,
                        r.protocol.to_owned(),
                        r.ports.join(","),
                        format!("{}{}", r.rule, if r.partial { " (partly)" } else { "" }),
                        if r.watched_by.is_empty() {
                            "-".to_owned()
                        } else {
                            r.watched_by.join(",")
                        },
                    ]
                })
                .collect();
            let head = ["DESTINATION", "PROTO", "PORTS", "RULE", "WATCHED BY"];
            let mut widths = head.map(str::len);
            for row in &rows {
                for (i, c) in row.iter().enumerate() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
            let line = |w: &mut dyn Write, cells: [&str; 5]| -> std::io::Result<()> {
                let mut s = String::from("  ");
                for (i, c) in cells.iter().enumerate() {
                    s.push_str(&format!("{c:<width$}  ", width = widths[i]));
                }
                writeln!(w, "{}", s.trim_end())
            };
            line(w, head)?;
            for row in &rows {
                line(w, [&row[0], &row[1], &row[2], &row[3], &row[4]])?;
            }
        }
        for f in &g.flags {
            let kind = serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            writeln!(w, "  ! {kind}: {}", f.message)?;
        }
        writeln!(w)?;
    }
    Ok(())
}
