# shellcheck shell=bash
# Shared by the bench scripts; sourced from the repository root (not run).
#
#   bench_build_tollgate         builds the release binary, prints its path
#   bench_build_bench NAME       builds benches/NAME.rs (release), prints its path
#                                (BENCH_TOLLGATE_BIN, BENCH_<NAME>_BIN: use these
#                                binaries instead of building; bench/suite.sh pins
#                                the binaries it built at its start this way)
#   bench_machine                one line: cores, CPU, memory, kernel, commit
#   bench_stop NAME PID…         SIGTERM, then waits for a clean exit (0)
#   bench_check_ledger NAME URL  runs `tollgate check-ledger` on a database
#
# Binaries are found through cargo's own output, so CARGO_TARGET_DIR (or a
# target-dir in a cargo config) is respected.

bench_root=$PWD

# Prints the path of the executable cargo built, given its JSON messages.
bench__executable() {
    sed -n "s/.*\"executable\":\"\\([^\"]*$1\\)\".*/\\1/p" | tail -1
}

bench_build_tollgate() {
    local path
    if [ -n "${BENCH_TOLLGATE_BIN:-}" ]; then
        echo "$BENCH_TOLLGATE_BIN"
        return
    fi
    path=$(cargo build --release --quiet --bin tollgate --message-format=json-render-diagnostics \
        | bench__executable '\/tollgate')
    [ -x "$path" ] || { echo "cannot find the tollgate release binary" >&2; return 1; }
    echo "$path"
}

bench_build_bench() {
    local path pinned
    pinned="BENCH_$(echo "$1" | tr '[:lower:]' '[:upper:]')_BIN"
    if [ -n "${!pinned:-}" ]; then
        echo "${!pinned}"
        return
    fi
    path=$(cargo build --release --quiet --bench "$1" --message-format=json-render-diagnostics \
        | bench__executable "\\/deps\\/$1-[^\"]*")
    [ -x "$path" ] || { echo "cannot find the $1 bench binary" >&2; return 1; }
    echo "$path"
}

bench_machine() {
    echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
        "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)," \
        "commit $(git -C "$bench_root" describe --always --dirty 2>/dev/null || echo '?')"
}

# The state letter of a process (empty once it is gone; Z until reaped).
bench__state() {
    awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null || true
}

# bench_stop NAME PID…: stops Tollgate servers (children of this shell) the
# way an operator would, with SIGTERM: each stops taking requests, finishes
# what is in flight (server.shutdown_grace_seconds, 30 s), flushes its
# recorder and exits 0. Waits up to BENCH_STOP_SECONDS (60) for all of them;
# one that is still running then is killed. Returns 1 unless every one
# exited with 0.
bench_stop() {
    local name=$1 pid state status failed=0 waited=0
    shift
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        while :; do
            state=$(bench__state "$pid")
            [ -z "$state" ] || [ "$state" = Z ] && break
            if [ "$waited" -ge $((${BENCH_STOP_SECONDS:-60} * 10)) ]; then
                echo "$name: process $pid did not stop within ${BENCH_STOP_SECONDS:-60} s of SIGTERM; killed" >&2
                kill -KILL "$pid" 2>/dev/null || true
                failed=1
                break
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        status=0
        wait "$pid" 2>/dev/null || status=$?
        if [ "$status" != 0 ]; then
            echo "$name: process $pid exited with status $status after SIGTERM" >&2
            failed=1
        fi
    done
    echo "$name: stopped (SIGTERM) in $(awk -v t="$waited" 'BEGIN { printf "%.1f", t / 10 }') s"
    return "$failed"
}

# bench_check_ledger NAME URL: the reconciliation check (issue 9): the raw
# records, the rollups, the budget spend aggregate and the alert minutes
# must agree to the nano-dollar. Run it on a database no server is writing
# to (after bench_stop). Prints the table between two marker lines that
# bench/suite.sh collects, and returns 1 if anything disagrees.
# Needs $bin (the tollgate binary).
bench_check_ledger() {
    local name=$1 url=$2 output status=0 started finished
    started=$(date +%s.%N)
    # shellcheck disable=SC2154 # $bin is the sourcing script's
    output=$("$bin" --database-url "$url" check-ledger 2>&1) || status=$?
    finished=$(date +%s.%N)
    echo "--- reconciliation: $name ($(echo "$url" | sed 's#//[^@/]*@#//#; s#?.*##'))"
    echo "$output"
    echo "--- reconciliation: $name: $([ "$status" = 0 ] && echo agree || echo DISAGREE)" \
        "(check-ledger took $(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.2f", b - a }') s)"
    return "$status"
}
