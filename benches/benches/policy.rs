//! Policy engine benchmarks on a synthetic policy of 10k rules, 100k name patterns and 50k CIDRs:
//! decision time of the compiled table over random queries (half with a name that matches a
//! pattern, half with one that matches none) against the naive first-match evaluator, the SYN-time
//! question, name normalisation, and compile time. The compiled size is printed once.
//!
//! Every benchmark runs twice: with wall-clock time (`*_wall`) and with the CPU time of the
//! benchmark thread (`*_cpu`), which is what to read on a machine shared with other work.
//!
//! `cargo bench -p bulkhead-benches --bench policy -- --warm-up-time 1 --measurement-time 3`

/// The allocator of the `bulkhead` binary, so the tables are laid out on the pages the daemon
/// gives them (large allocations on transparent huge pages; see `bulkhead_gateway::sys::alloc`).
#[global_allocator]
static GLOBAL: bulkhead_gateway::sys::alloc::HugePageAlloc =
    bulkhead_gateway::sys::alloc::HugePageAlloc;

use std::hint::black_box;
use std::time::Instant;

use bulkhead_benches::cpu_time::ThreadCpuTime;
use bulkhead_testkit::synthetic::{random_queries, synthetic_policy, Shape};
use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use policy_engine::{compile, naive, normalize_name};

const QUERIES: usize = 8192;

fn bench_wall(c: &mut Criterion) {
    bench_policy(c, "wall");
}

fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    bench_policy(c, "cpu");
}

fn bench_policy<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let synthetic = synthetic_policy(Shape::LARGE, 1);
    let policy = &synthetic.policy;
    let started = Instant::now();
    let compiled = compile(policy, 1);
    let first_compile = started.elapsed();
    let stats = compiled.stats();
    eprintln!(
        "synthetic policy: {} rules, {} patterns, {} CIDRs ({} smartgroups, {} webgroups, {} addressgroups)",
        stats.rules, stats.patterns, stats.cidrs, stats.smartgroups, stats.webgroups, stats.addressgroups
    );
    eprintln!(
        "compiled in {:.1} ms: {:.1} MiB ({} address intervals, {} src classes, {} dst classes, {} name nodes, {} name classes, {} port classes)",
        first_compile.as_secs_f64() * 1e3,
        stats.memory_bytes as f64 / f64::from(1u32 << 20),
        stats.address_intervals,
        stats.src_classes,
        stats.dst_classes,
        stats.name_nodes,
        stats.name_classes,
        stats.port_classes
    );
    let queries = random_queries(&synthetic, QUERIES, 2);
    let matched = queries
        .iter()
        .filter(|q| compiled.evaluate(&q.as_query()).rule.index().is_some())
        .count();
    eprintln!(
        "queries: {QUERIES}, decided by a rule: {matched}, by the default: {}",
        QUERIES - matched
    );

    let mut group = c.benchmark_group(format!("policy_decision_{clock}"));
    let mut i = 0usize;
    group.bench_function("compiled_evaluate", |b| {
        b.iter(|| {
            let q = &queries[i % QUERIES];
            i = i.wrapping_add(1);
            black_box(compiled.evaluate(black_box(&q.as_query())))
        })
    });
    let mut i = 0usize;
    group.bench_function("compiled_evaluate_without_name", |b| {
        b.iter(|| {
            let q = &queries[i % QUERIES];
            i = i.wrapping_add(1);
            black_box(compiled.evaluate_without_name(black_box(&q.as_query())))
        })
    });
    group.finish();

    // The naive evaluator takes milliseconds per query: fewer samples keep the run short.
    let mut group = c.benchmark_group(format!("policy_decision_{clock}"));
    group.sample_size(10);
    let mut i = 0usize;
    group.bench_function("naive_first_match", |b| {
        b.iter(|| {
            let q = &queries[i % QUERIES];
            i = i.wrapping_add(1);
            black_box(naive::first_matches(policy, black_box(&q.as_query())))
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("policy_names_{clock}"));
    group.bench_function("normalize_name_already_normal", |b| {
        b.iter(|| {
            black_box(normalize_name(black_box(
                "bedrock-runtime.us-east-1.amazonaws.com",
            )))
        })
    });
    group.bench_function("normalize_name_mixed_case", |b| {
        b.iter(|| {
            black_box(normalize_name(black_box(
                "Bedrock-Runtime.US-East-1.AmazonAWS.com.",
            )))
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("policy_compile_{clock}"));
    group.sample_size(10);
    group.bench_function("compile_10k_rules_100k_patterns_50k_cidrs", |b| {
        b.iter_batched(
            || (),
            |()| black_box(compile(policy, 2)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(wall, bench_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
