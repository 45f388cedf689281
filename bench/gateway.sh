#!/usr/bin/env bash
# Gateway latency and throughput on this machine (issue 3, "Measure"): the
# fake upstream called directly, through `tollgate serve` (recording into
# SQLite), and, with WITH_LITELLM=1, through LiteLLM's proxy (2 workers, no
# database), all against the same fake upstream on 127.0.0.1, side by side.
# Run by hand; figures go to docs/benchmarks.md.
#
#   bench/gateway.sh                      # direct and tollgate
#   WITH_LITELLM=1 bench/gateway.sh       # and LiteLLM (installed into target/litellm-venv)
#   BENCH_ARGS="--rates 1000 --phases rates" bench/gateway.sh
#   BUDGETS=1000 bench/gateway.sh         # and a second Tollgate enforcing 1,000 budgets
#
# Settings (environment): FAKE_PORT, GATEWAY_PORT, LITELLM_PORT (defaults
# 18090-18092), LITELLM_VENV (default target/litellm-venv), BENCH_ARGS (extra
# flags for benches/gateway.rs, e.g. --rate-seconds 10 --max-seconds 5),
# KEEP_WORKDIR=1 (keep the temporary folder with the database and logs),
# BUDGETS=N and BUDGETS_PORT (default 18093): a second `tollgate serve`, on
# its own SQLite file, with N budgets on the benchmark's organization (one
# hard org-wide budget covering every request, N-1 per-user budgets that do
# not cover it, so each request looks through all N).
set -euo pipefail
cd "$(dirname "$0")/.."

fake_port="${FAKE_PORT:-18090}"
gateway_port="${GATEWAY_PORT:-18091}"
litellm_port="${LITELLM_PORT:-18092}"
with_litellm="${WITH_LITELLM:-0}"
venv=$(realpath -m "${LITELLM_VENV:-target/litellm-venv}")
litellm_version="1.108.7"

cargo build --release --quiet
bench=$(cargo build --release --quiet --bench gateway --message-format=json-render-diagnostics \
    | sed -n 's/.*"executable":"\([^"]*\/deps\/gateway-[^"]*\)".*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "cannot find the gateway bench binary" >&2; exit 1; }
bin="$PWD/target/release/tollgate"

work=$(mktemp -d -t tollgate-gateway-bench.XXXXXX)
pids=()
groups=()
bench_pid=
cleanup() {
    local pid
    [ -z "$bench_pid" ] || kill -TERM "$bench_pid" 2>/dev/null || true
    for pid in "${groups[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # LiteLLM takes a few seconds to stop its workers.
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${groups[@]}" "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${groups[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# wait_for PORT SECONDS NAME PID: until the port accepts connections.
wait_for() {
    local tries=$(($2 * 10))
    while port_free "$1"; do
        kill -0 "$4" 2>/dev/null || { echo "$3 exited; see its log in $work" >&2; exit 1; }
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || { echo "$3 did not listen on $1 within $2 s" >&2; exit 1; }
        sleep 0.1
    done
}
for port in "$fake_port" "$gateway_port"; do
    port_free "$port" || { echo "port $port is in use" >&2; exit 1; }
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
    "$(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r), commit $(git describe --always --dirty 2>/dev/null || echo '?')"

export TOLLGATE_LOG=warn
"$bin" fake-upstream --listen "127.0.0.1:$fake_port" >"$work/fake.log" 2>&1 &
fake_pid=$!
pids+=("$fake_pid")
wait_for "$fake_port" 10 "the fake upstream" "$fake_pid"

# Tollgate with recording on, into a fresh SQLite file; the spool (unused
# while the database is up) also lives in the temporary folder.
printf '[recorder]\nspool_dir = "%s/spool"\n' "$work" >"$work/tollgate.toml"
export TOLLGATE_CONFIG="$work/tollgate.toml"
database="sqlite://$work/bench.db"
key=$("$bin" --database-url "$database" keys create --org bench 2>>"$work/tollgate.log")
TOLLGATE_OPENAI_BASE_URL="http://127.0.0.1:$fake_port/openai/v1" OPENAI_API_KEY=sk-bench \
    DATABASE_URL="$database" "$bin" serve --listen "127.0.0.1:$gateway_port" \
    >>"$work/tollgate.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
wait_for "$gateway_port" 30 "tollgate" "$gateway_pid"

targets=(
    --target direct --url "http://127.0.0.1:$fake_port/openai/v1/chat/completions" --token sk-bench
    --target tollgate --url "http://127.0.0.1:$gateway_port/v1/chat/completions" --token "$key"
    --pid "$gateway_pid"
)

budgets="${BUDGETS:-0}"
if [ "$budgets" -gt 0 ]; then
    budgets_port="${BUDGETS_PORT:-18093}"
    port_free "$budgets_port" || { echo "port $budgets_port is in use" >&2; exit 1; }
    admin_token="bench-admin-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
    budgets_db="sqlite://$work/budgets.db"
    budgets_key=$("$bin" --database-url "$budgets_db" keys create --org bench 2>>"$work/budgets.log")
    printf '[recorder]\nspool_dir = "%s/budgets-spool"\n' "$work" >"$work/budgets.toml"
    TOLLGATE_CONFIG="$work/budgets.toml" TOLLGATE_ADMIN_TOKEN="$admin_token" \
        TOLLGATE_OPENAI_BASE_URL="http://127.0.0.1:$fake_port/openai/v1" OPENAI_API_KEY=sk-bench \
        DATABASE_URL="$budgets_db" "$bin" serve --listen "127.0.0.1:$budgets_port" \
        >>"$work/budgets.log" 2>&1 &
    budgets_pid=$!
    pids+=("$budgets_pid")
    wait_for "$budgets_port" 30 "tollgate (budgets)" "$budgets_pid"
    create_budget() {
        curl -sf -o /dev/null -X POST "http://127.0.0.1:$budgets_port/api/v1/budgets" \
            -H "authorization: Bearer $admin_token" -H 'content-type: application/json' -d "$1" \
            || { echo "cannot create a budget: $1" >&2; exit 1; }
    }
    create_budget '{"org_id":"bench","budget_type":"monthly","budget_amount_usd":"1000000","hard_limit":true}'
    for i in $(seq 2 "$budgets"); do
        create_budget "{\"org_id\":\"bench\",\"user_id\":\"user-$i\",\"budget_type\":\"daily\",\"budget_amount_usd\":\"100\",\"hard_limit\":true}"
    done
    echo "tollgate-budgets: $budgets budgets on organization bench"
    targets+=(
        --target tollgate-budgets --url "http://127.0.0.1:$budgets_port/v1/chat/completions"
        --token "$budgets_key" --pid "$budgets_pid"
    )
fi

if [ "$with_litellm" = 1 ]; then
    port_free "$litellm_port" || { echo "port $litellm_port is in use" >&2; exit 1; }
    if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$litellm_version')" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --upgrade pip
        "$venv/bin/pip" install --quiet "litellm[proxy]==$litellm_version"
    fi
    echo "litellm $litellm_version on $("$venv/bin/python" -V 2>&1)"
    # LiteLLM refuses to start without a master key; with one and no database
    # it checks the key in memory, as Tollgate checks its gateway key.
    master_key="sk-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    cat >"$work/litellm.yaml" <<EOF
general_settings:
  master_key: $master_key
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$fake_port/openai/v1
      api_key: sk-bench
EOF
    # Its own process group (setsid), so the trap ends the master and its
    # workers together. No DATABASE_URL: no database, no spend logs.
    (cd "$work" && exec env -u DATABASE_URL -u TOLLGATE_CONFIG -u TOLLGATE_LOG \
        LITELLM_LOCAL_MODEL_COST_MAP=True setsid "$venv/bin/litellm" \
        --config "$work/litellm.yaml" --host 127.0.0.1 --port "$litellm_port" --num_workers 2 \
        >"$work/litellm.log" 2>&1) &
    # Not a group leader (no job control in scripts), setsid does not fork:
    # $! is litellm's master, leading its own group.
    litellm_pid=$!
    groups+=("$litellm_pid")
    wait_for "$litellm_port" 180 "litellm" "$litellm_pid"
    # Its workers import for a while after the port opens: wait for an answer.
    for _ in $(seq 1 120); do
        curl -sf -o /dev/null "http://127.0.0.1:$litellm_port/health/liveliness" && break
        sleep 1
    done
    targets+=(
        --target litellm --url "http://127.0.0.1:$litellm_port/v1/chat/completions" --token "$master_key"
        --pid "$litellm_pid"
    )
fi

# In the background, so that the trap runs at once on INT or TERM.
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
"$bench" --fake-pid "$fake_pid" "${targets[@]}" ${BENCH_ARGS:-} &
bench_pid=$!
wait "$bench_pid"
bench_pid=

# Every answered request through the gateway is a row in the ledger.
sleep 1
if command -v sqlite3 >/dev/null; then
    echo "tollgate ledger: $(sqlite3 "$work/bench.db" 'SELECT count(*) FROM ai_provider_usage') usage records"
fi
if grep -qiE 'error|warn' "$work/tollgate.log"; then
    echo "tollgate logged warnings or errors:" >&2
    grep -iE 'error|warn' "$work/tollgate.log" | sort | uniq -c | sort -rn | head -5 >&2
fi
