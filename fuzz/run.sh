#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a while each, one at a time,
# and fails if any of them finds a crash, a hang or an out-of-memory input.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target: the first argument, else $FUZZ_SECONDS, else 60.
# TARGETS: sse_parser usage_extraction ingest config (all by default).
# Other settings: FUZZ_TOOLCHAIN (nightly), FUZZ_SANITIZER (none: the code
# under test forbids `unsafe`, so AddressSanitizer has little to find and
# would slow every execution), FUZZ_MAX_LEN (8192 bytes per input),
# FUZZ_TIMEOUT (10 s per input).
#
# Needs a nightly toolchain (cargo-fuzz builds with SanitizerCoverage and
# -Z flags); installs cargo-fuzz, pinned, if it is missing. Builds go to
# fuzz/target, apart from the main crate's target/. Seeds are read from
# fuzz/corpus/<target> and never written; what a run learns is kept in
# fuzz/target/corpus/<target> for the next run. Each target gets a
# dictionary of its format's tokens and edge values (fuzz/dict). Crashes are
# written to fuzz/artifacts/<target>/ and replay with
#   cargo +nightly fuzz run -s none <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

CARGO_FUZZ_VERSION="0.13.2"
ALL_TARGETS=(sse_parser usage_extraction ingest config)

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir"

seconds="${FUZZ_SECONDS:-60}"
if [[ $# -gt 0 ]]; then
    seconds="$1"
    shift
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
    echo "usage: fuzz/run.sh [SECONDS] [TARGET...]  (SECONDS must be a positive integer)" >&2
    exit 2
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${ALL_TARGETS[@]}")
fi
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-none}"
max_len="${FUZZ_MAX_LEN:-8192}"
timeout="${FUZZ_TIMEOUT:-10}"

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TARGET_DIR="$fuzz_dir/target"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "== installing the $toolchain toolchain"
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
installed="$(cargo fuzz --version)"
if [[ "$installed" != *"$CARGO_FUZZ_VERSION"* ]]; then
    echo "note: using $installed (run.sh pins $CARGO_FUZZ_VERSION)"
fi

for target in "${targets[@]}"; do
    if [[ ! -f "fuzz_targets/$target.rs" ]]; then
        echo "unknown target $target (expected one of: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

echo "== building ${targets[*]} ($toolchain, sanitizer: $sanitizer)"
if [[ "${targets[*]}" == "${ALL_TARGETS[*]}" ]]; then
    cargo "+$toolchain" fuzz build -s "$sanitizer"
else
    for target in "${targets[@]}"; do
        cargo "+$toolchain" fuzz build -s "$sanitizer" "$target"
    done
fi

mkdir -p target/logs
failed=()
for target in "${targets[@]}"; do
    work="target/corpus/$target"
    log="target/logs/$target.log"
    mkdir -p "$work"
    case "$target" in
        sse_parser) dict=dict/sse.dict ;;
        config) dict=dict/toml.dict ;;
        *) dict=dict/json.dict ;;
    esac
    echo "== $target: ${seconds}s (log: fuzz/$log)"
    set +e
    cargo "+$toolchain" fuzz run -s "$sanitizer" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout="$timeout" \
        -dict="$dict" -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    # The last status line (#runs, coverage, features, corpus) and the totals.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log" || true
    if [[ $status -ne 0 ]]; then
        echo "!! $target failed (exit $status); the input is in fuzz/artifacts/$target/:"
        grep -E 'panicked at|SUMMARY|ERROR: libFuzzer|Test unit written' "$log" | head -n 5 || true
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "== failed: ${failed[*]}"
    exit 1
fi
echo "== no crashes in ${targets[*]}"
