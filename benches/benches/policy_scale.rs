//! Policy checks at scale: `check-policy`'s work (load with validation and the dead-rule search,
//! then compile) on generated policy files of 100k rules in several shapes:
//!
//! - `any_any_ports`: `src = "any"`, `dst = "any"`, `ports = [N]`, N cycling over all ports, so
//!   that the later rules repeat the ports of earlier ones (and are shadowed by them);
//! - `many_groups`: each rule names one of 5 000 SmartGroups and one of 5 000 AddressGroups;
//! - `include_tree`: a policy that includes the most catalogs allowed (64), 1 000 WebGroups
//!   each, with rules naming them;
//! - `inline_rules`: the rules written as inline tables in one `rules = [...]` array.
//!
//! The target is 100k rules checked and compiled in at most 5 s and 1 GB on a 2-core machine.
//! Peak memory is not measured here: run `/usr/bin/time -v bulkhead check-policy FILE` on a file
//! this bench writes with `POLICY_SCALE_KEEP=DIR` (see docs/performance.md, "Policy scale").
//!
//! `cargo bench -p bulkhead-benches --bench policy_scale`

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use policy_engine::{compile, load_policy_file};

const RULES: usize = 100_000;

/// `n` rules as `[[rules]]` tables; `src` and `dst` of rule `i` from the closures.
fn rule_tables(
    n: usize,
    src: impl Fn(usize) -> String,
    dst: impl Fn(usize) -> String,
    ports: impl Fn(usize) -> String,
) -> String {
    let mut text = String::with_capacity(n * 120);
    for i in 0..n {
        let _ = writeln!(
            text,
            "[[rules]]\nname = \"r{i}\"\npriority = {}\nsrc = [{}]\ndst = [{}]\nports = [{}]\naction = \"permit\"\n",
            i + 1,
            src(i),
            dst(i),
            ports(i)
        );
    }
    text
}

fn any_any_ports() -> String {
    rule_tables(
        RULES,
        |_| "\"any\"".into(),
        |_| "\"any\"".into(),
        |i| format!("\"{}\"", i % 65_535 + 1),
    )
}

fn many_groups() -> String {
    const GROUPS: usize = 5_000;
    let mut text = String::new();
    for g in 0..GROUPS {
        let _ = writeln!(
            text,
            "[smartgroups.s{g}]\ncidrs = [\"10.{}.{}.0/24\"]\n[addressgroups.a{g}]\ncidrs = [\"198.{}.{}.0/24\"]",
            g / 256,
            g % 256,
            18 + g / 256 % 2,
            g % 256
        );
    }
    text + &rule_tables(
        RULES,
        |i| format!("\"s{}\"", i % GROUPS),
        |i| format!("\"a{}\", \"a{}\"", (i * 7) % GROUPS, (i * 13 + 1) % GROUPS),
        |i| format!("\"{}\"", 443 + i % 50),
    )
}

/// Writes the catalogs of the include tree into `dir` and returns the policy text.
fn include_tree(dir: &Path) -> String {
    const CATALOGS: usize = 64;
    const GROUPS: usize = 1_000;
    let mut includes = Vec::new();
    for c in 0..CATALOGS {
        let mut catalog = String::from("version = 1\n");
        for g in 0..GROUPS {
            let _ = writeln!(
                catalog,
                "[webgroups.w{c}-{g}]\ndomains = [\"api{g}.svc{c}.example.com\", \"*.g{g}.svc{c}.example.net\"]"
            );
        }
        let name = format!("catalog-{c}.toml");
        std::fs::write(dir.join(&name), catalog).expect("write a catalog");
        includes.push(format!("\"{name}\""));
    }
    let mut text = format!(
        "[policy]\ninclude = [{}]\n[smartgroups.agents]\ncidrs = [\"10.0.0.0/8\"]\n",
        includes.join(", ")
    );
    text += &rule_tables(
        RULES,
        |_| "\"agents\"".into(),
        |i| format!("\"w{}-{}\"", i % CATALOGS, i / CATALOGS % GROUPS),
        |_| "\"443\"".into(),
    );
    text
}

fn inline_rules() -> String {
    let mut text = String::from("rules = [\n");
    for i in 0..RULES {
        let _ = writeln!(
            text,
            "  {{ name = \"r{i}\", priority = {}, src = [\"any\"], dst = [\"any\"], protocol = \"tcp\", ports = [\"{}\"], action = \"deny\" }},",
            i + 1,
            1 + i % 1024
        );
    }
    text + "]\n"
}

/// Where the generated files go: `POLICY_SCALE_KEEP` if set (kept for measuring by hand), else
/// a directory of this process under the system's temporary directory (removed at the end).
fn work_dir() -> (PathBuf, bool) {
    match std::env::var_os("POLICY_SCALE_KEEP") {
        Some(dir) => (PathBuf::from(dir), true),
        None => (
            std::env::temp_dir().join(format!("bulkhead-policy-scale-{}", std::process::id())),
            false,
        ),
    }
}

fn bench_scale(c: &mut Criterion) {
    let (dir, keep) = work_dir();
    std::fs::create_dir_all(&dir).expect("create the work directory");
    let shapes: Vec<(&str, String)> = vec![
        ("any_any_ports", any_any_ports()),
        ("many_groups", many_groups()),
        ("include_tree", include_tree(&dir)),
        ("inline_rules", inline_rules()),
    ];
    let mut group = c.benchmark_group("policy_scale");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, text) in &shapes {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write the policy");
        // Once outside the timing: the policy must be valid, or the bench measures errors.
        let loaded = load_policy_file(&path).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert_eq!(loaded.policy.rules.len(), RULES, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| {
                let loaded = load_policy_file(&path).expect("valid");
                compile(&loaded.policy, 1)
            })
        });
    }
    group.finish();
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

criterion_group!(benches, bench_scale);
criterion_main!(benches);
