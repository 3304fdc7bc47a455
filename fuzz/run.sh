#!/usr/bin/env bash
# Builds one fuzz target and runs it for a bounded time, seeded from recorded traffic.
#
#   fuzz/run.sh TARGET SECONDS
#
# Works on a stable toolchain. Targets are built optimised with debug assertions and overflow
# checks and, by default, no sanitizer: the code under test has no unsafe code. FUZZ_SANITIZER=address
# builds with ASan (through RUSTC_BOOTSTRAP=1, as its flag is unstable). The seed
# corpus is rebuilt from the project's testdata/ plus, when present, the extra conformance corpus
# ($BULKHEAD_CORPUS, default: ../shared/corpus from the repository root) into fuzz/corpus/TARGET,
# which is not committed. Crashes land in fuzz/artifacts/TARGET.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 TARGET SECONDS" >&2
    exit 2
fi
target=$1
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
corpus_src=${BULKHEAD_CORPUS:-$root/../shared/corpus}
sanitizer=${FUZZ_SANITIZER:-none}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 1
fi

mkdir -p "$here/corpus/$target"
sources=("$root/testdata" "$root/testdata/coverage")
if [ -f "$corpus_src/manifest.tsv" ]; then
    sources+=("$corpus_src")
else
    echo "note: no extra corpus at $corpus_src: seeding from testdata/ only" >&2
fi
python3 "$here/make_seeds.py" "${sources[@]}" "$here/corpus"
echo "seeds: $(find "$here/corpus/$target" -type f | wc -l) files in fuzz/corpus/$target"

cd "$here"
# Sanitizers need unstable rustc flags; RUSTC_BOOTSTRAP lets a stable toolchain accept them.
if [ "$sanitizer" != none ]; then export RUSTC_BOOTSTRAP=1; fi
cargo fuzz build -s "$sanitizer" "$target"
cargo fuzz run -s "$sanitizer" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
