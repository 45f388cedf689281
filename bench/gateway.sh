#!/usr/bin/env bash
# Gateway latency and throughput on this machine (issue 3, "Measure"): the
# fake upstream called directly, through `tollgate serve` (recording into
# SQLite), and, with WITH_LITELLM=1, through LiteLLM's proxy (2 workers, no
# database), all against the same fake upstream on 127.0.0.1, side by side.
# When the load is over, every Tollgate it started is stopped with SIGTERM
# (it flushes its recorder) and `tollgate check-ledger` is run on each
# database: the script fails if the ledger and its rollups, budget spend or
# alert minutes disagree (issue 9). Run by hand or by bench/suite.sh;
# figures go to docs/benchmarks.md.
#
#   bench/gateway.sh                      # direct and tollgate
#   WITH_LITELLM=1 bench/gateway.sh       # and LiteLLM (installed into target/litellm-venv)
#   BENCH_ARGS="--rates 1000 --phases rates" bench/gateway.sh
#   DURABILITY=fsync bench/gateway.sh     # every Tollgate with recorder.durability = fsync
#   DURABILITY=off,process,fsync BENCH_ARGS="--phases c1,rates" bench/gateway.sh
#                                         # one Tollgate per value, measured side by side
#   BUDGETS=1000 bench/gateway.sh         # and a second Tollgate enforcing 1,000 budgets
#   ALERTS_ORGS=100 bench/gateway.sh      # two more gateways, alert rules on and off, 100 orgs
#   BUDGETS=1000 BUDGETS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
#       BUDGETS_INSTANCES=3 bench/gateway.sh   # the same on three instances sharing PostgreSQL
#
# Settings (environment): FAKE_PORT, GATEWAY_PORT, LITELLM_PORT (defaults
# 18090-18092), LITELLM_VENV (default target/litellm-venv), BENCH_ARGS (extra
# flags for benches/gateway.rs, e.g. --rate-seconds 10 --max-seconds 5),
# KEEP_WORKDIR=1 (keep the temporary folder with the databases and logs),
# DURABILITY (the recorder's crash journal, TOLLGATE_DURABILITY: process,
# fsync or off; default: the server's default, process): one value is given
# to every Tollgate this starts; a comma-separated list starts one Tollgate
# per value instead of `tollgate` (targets tg-off, tg-process, tg-fsync; ports
# DURABILITY_PORT, default 18100, and up; the other instances keep the
# server's default), each on its own SQLite file and journal, so the
# journal's cost is measured in one run with the targets interleaved.
# BUDGETS=N and BUDGETS_PORT (default 18093): a second `tollgate serve`, on
# its own SQLite file, with N budgets on the benchmark's organization (one
# hard org-wide budget covering every request, N-1 per-user budgets that do
# not cover it, so each request looks through all N). With BUDGETS_DATABASE_URL
# (a PostgreSQL server URL; a fresh database is made on it and dropped after)
# and BUDGETS_INSTANCES=K, K such instances share that database: the target
# `budgets` (N budgets) and `no-budgets` (an organization without budgets)
# spread their connections over the K instances, and after the measurements
# 300 concurrent requests against a hard budget worth about 20 of them
# measure the overspend across instances. ALERTS_ORGS=N (ports ALERTS_PORT,
# default 18096, and the next): two more gateways on their own SQLite files,
# `alerts-on` and `alerts-off` (TOLLGATE_ALERTS_ENABLED), each seeded through
# the ingest API with spend over every high-usage threshold and failing
# requests for N organizations, so that the evaluator has 2N alerts and N
# error-rate scopes to keep up to date while the gateway is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

fake_port="${FAKE_PORT:-18090}"
gateway_port="${GATEWAY_PORT:-18091}"
litellm_port="${LITELLM_PORT:-18092}"
with_litellm="${WITH_LITELLM:-0}"
venv=$(realpath -m "${LITELLM_VENV:-target/litellm-venv}")
litellm_version="1.108.7"

durability="${DURABILITY:-}"
durability_port="${DURABILITY_PORT:-18100}"
durabilities=()
IFS=, read -ra durabilities <<<"$durability"
for value in "${durabilities[@]}"; do
    case "$value" in
        process | fsync | off) ;;
        *) echo "DURABILITY=$durability: each value must be process, fsync or off" >&2; exit 2 ;;
    esac
done
if [ "${#durabilities[@]}" -eq 1 ]; then
    export TOLLGATE_DURABILITY="$durability"
fi

bin=$(bench_build_tollgate)
bench=$(bench_build_bench gateway)

work=$(mktemp -d -t tollgate-gateway-bench.XXXXXX)
pids=()
# Tollgate servers: stopped gracefully before the reconciliation.
servers=()
groups=()
bench_pid=
cleanup() {
    local pid
    [ -z "$bench_pid" ] || kill -TERM "$bench_pid" 2>/dev/null || true
    for pid in "${groups[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${servers[@]}" "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # LiteLLM takes a few seconds to stop its workers.
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${groups[@]}" "${servers[@]}" "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${groups[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    for pid in "${servers[@]}" "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
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

echo "machine: $(bench_machine)"
if [ "${#durabilities[@]}" -gt 1 ]; then
    echo "durability: one Tollgate per value: ${durabilities[*]}"
else
    echo "durability: ${durability:-process} (TOLLGATE_DURABILITY; the server's default is process)"
fi

export TOLLGATE_LOG=warn
"$bin" fake-upstream --listen "127.0.0.1:$fake_port" >"$work/fake.log" 2>&1 &
fake_pid=$!
pids+=("$fake_pid")
wait_for "$fake_port" 10 "the fake upstream" "$fake_pid"

# start_tollgate NAME PORT DATABASE [VAR=VALUE…]: `tollgate serve` in front
# of the fake upstream, with its own config (the spool and the crash journal
# live in the temporary folder) and log ($work/NAME.log); the assignments
# are added to its environment. Sets started_pid.
started_pid=
start_tollgate() {
    local name=$1 port=$2 database=$3
    shift 3
    port_free "$port" || { echo "port $port is in use" >&2; exit 1; }
    printf '[recorder]\nspool_dir = "%s/%s-spool"\n' "$work" "$name" >"$work/$name.toml"
    env TOLLGATE_CONFIG="$work/$name.toml" \
        TOLLGATE_OPENAI_BASE_URL="http://127.0.0.1:$fake_port/openai/v1" OPENAI_API_KEY=sk-bench \
        DATABASE_URL="$database" "$@" "$bin" serve --listen "127.0.0.1:$port" \
        >>"$work/$name.log" 2>&1 &
    started_pid=$!
    servers+=("$started_pid")
    wait_for "$port" 30 "tollgate ($name)" "$started_pid"
}
# Databases to reconcile at the end, as "NAME URL".
ledgers=()

targets=(
    --target direct --url "http://127.0.0.1:$fake_port/openai/v1/chat/completions" --token sk-bench
)
# Tollgate with recording on, into a fresh SQLite file; or one per
# durability setting.
if [ "${#durabilities[@]}" -gt 1 ]; then
    index=0
    for value in "${durabilities[@]}"; do
        name="tg-$value"
        database="sqlite://$work/$name.db"
        key=$("$bin" --database-url "$database" keys create --org bench 2>>"$work/$name.log")
        start_tollgate "$name" $((durability_port + index)) "$database" TOLLGATE_DURABILITY="$value"
        targets+=(
            --target "$name" --url "http://127.0.0.1:$((durability_port + index))/v1/chat/completions"
            --token "$key" --pid "$started_pid"
        )
        ledgers+=("$name $database")
        index=$((index + 1))
    done
else
    database="sqlite://$work/bench.db"
    key=$("$bin" --database-url "$database" keys create --org bench 2>>"$work/tollgate.log")
    start_tollgate tollgate "$gateway_port" "$database"
    targets+=(
        --target tollgate --url "http://127.0.0.1:$gateway_port/v1/chat/completions" --token "$key"
        --pid "$started_pid"
    )
    ledgers+=("tollgate $database")
fi

budgets="${BUDGETS:-0}"
instances="${BUDGETS_INSTANCES:-1}"
budgets_pg_server="${BUDGETS_DATABASE_URL:-}"
budgets_admin=
budgets_urls=()
if [ "$budgets" -gt 0 ]; then
    budgets_port="${BUDGETS_PORT:-18093}"
    budgets_admin="bench-admin-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
    if [ -n "$budgets_pg_server" ]; then
        pg_name="tollgate_bench_$$"
        psql -q "$budgets_pg_server" -c "CREATE DATABASE $pg_name" >/dev/null
        pg_dropped() { psql -q "$budgets_pg_server" -c "DROP DATABASE IF EXISTS $pg_name WITH (FORCE)" >/dev/null 2>&1 || true; }
        trap 'cleanup; pg_dropped' EXIT
        budgets_db="${budgets_pg_server%/*}/$pg_name"
    else
        budgets_db="sqlite://$work/budgets.db"
        instances=1
    fi
    budgets_key=$("$bin" --database-url "$budgets_db" keys create --org bench 2>>"$work/budgets.log")
    free_key=$("$bin" --database-url "$budgets_db" keys create --org free 2>>"$work/budgets.log")
    tight_key=$("$bin" --database-url "$budgets_db" keys create --org tight 2>>"$work/budgets.log")
    budget_pids=()
    for i in $(seq 0 $((instances - 1))); do
        port=$((budgets_port + i))
        start_tollgate "budgets-$i" "$port" "$budgets_db" TOLLGATE_ADMIN_TOKEN="$budgets_admin"
        budget_pids+=("$started_pid")
        budgets_urls+=("127.0.0.1:$port")
    done
    ledgers+=("budgets $budgets_db")
    create_budget() {
        curl -sf -o /dev/null -X POST "http://127.0.0.1:$budgets_port/api/v1/budgets" \
            -H "authorization: Bearer $budgets_admin" -H 'content-type: application/json' -d "$1" \
            || { echo "cannot create a budget: $1" >&2; exit 1; }
    }
    create_budget '{"org_id":"bench","budget_type":"monthly","budget_amount_usd":"1000000","hard_limit":true}'
    for i in $(seq 2 "$budgets"); do
        create_budget "{\"org_id\":\"bench\",\"user_id\":\"user-$i\",\"budget_type\":\"daily\",\"budget_amount_usd\":\"100\",\"hard_limit\":true}"
    done
    echo "budgets: $budgets budgets on organization bench, $instances instance(s) on $( [ -n "$budgets_pg_server" ] && echo PostgreSQL || echo SQLite)"
    pid_flags=()
    also_flags=()
    for pid in "${budget_pids[@]}"; do pid_flags+=(--pid "$pid"); done
    for url in "${budgets_urls[@]:1}"; do also_flags+=(--also "$url"); done
    if [ "$instances" -gt 1 ]; then
        targets+=(
            --target no-budgets --url "http://${budgets_urls[0]}/v1/chat/completions"
            "${also_flags[@]}" --token "$free_key" "${pid_flags[@]}"
        )
    fi
    targets+=(
        --target budgets --url "http://${budgets_urls[0]}/v1/chat/completions"
        "${also_flags[@]}" --token "$budgets_key" "${pid_flags[@]}"
    )
    # Refreshes of budget definitions reach every instance within 5 s.
    sleep 6
fi

alerts_orgs="${ALERTS_ORGS:-0}"
if [ "$alerts_orgs" -gt 0 ]; then
    alerts_port="${ALERTS_PORT:-18096}"
    alerts_admin="bench-admin-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
    for variant in on off; do
        port=$alerts_port
        [ "$variant" = off ] && port=$((alerts_port + 1))
        db="sqlite://$work/alerts-$variant.db"
        variant_key=$("$bin" --database-url "$db" keys create --org bench 2>>"$work/alerts-$variant.log")
        enabled=true
        [ "$variant" = off ] && enabled=false
        start_tollgate "alerts-$variant" "$port" "$db" \
            TOLLGATE_ADMIN_TOKEN="$alerts_admin" TOLLGATE_ALERTS_ENABLED="$enabled"
        variant_pid=$started_pid
        ledgers+=("alerts-$variant $db")
        python3 - "$port" "$alerts_admin" "$alerts_orgs" <<'PY'
import json, sys, urllib.request
port, token, orgs = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = []
for org in range(orgs):
    records.append({"org_id": f"org-{org}", "provider": "openai", "model": "gpt-4o", "task_type": "chat",
                    "input_tokens": 1000, "output_tokens": 100, "cost_usd": "60"})
    for failure in range(25):
        records.append({"org_id": f"org-{org}", "provider": "openrouter", "model": f"vendor/model-{org}",
                        "task_type": "chat", "input_tokens": 10, "output_tokens": 0, "cost_usd": "0",
                        "status": "error", "status_code": 500})
request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/usage",
    data=json.dumps({"records": records}).encode(), method="POST",
    headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
urllib.request.urlopen(request).read()
PY
        targets+=(
            --target "alerts-$variant" --url "http://127.0.0.1:$port/v1/chat/completions"
            --token "$variant_key" --pid "$variant_pid"
        )
    done
    sleep 3
    open_alerts=$(curl -sf "http://127.0.0.1:$alerts_port/api/v1/alerts?status=active&limit=1000" \
        -H "authorization: Bearer $alerts_admin" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
    echo "alerts: $alerts_orgs organizations seeded; alerts-on has $open_alerts open alerts, alerts-off evaluates none"
fi

if [ "$with_litellm" = 1 ]; then
    port_free "$litellm_port" || { echo "port $litellm_port is in use" >&2; exit 1; }
    if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$litellm_version')" 2>/dev/null; then
        echo "installing litellm[proxy]==$litellm_version into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --upgrade pip
        "$venv/bin/pip" install --quiet "litellm[proxy]==$litellm_version"
    fi
    echo "litellm $litellm_version on $("$venv/bin/python" -V 2>&1)"
    # LiteLLM refuses to start without a master key; with one and no database
    # it checks the key in memory, as Tollgate checks its gateway key.
    master_key="sk-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    cat >"$work/litellm.yaml" <<YAML
general_settings:
  master_key: $master_key
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$fake_port/openai/v1
      api_key: sk-bench
YAML
    # Its own process group (setsid), so the trap ends the master and its
    # workers together. No DATABASE_URL: no database, no spend logs.
    (cd "$work" && exec env -u DATABASE_URL -u TOLLGATE_CONFIG -u TOLLGATE_LOG -u TOLLGATE_DURABILITY \
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

# Overspend across instances: a hard budget worth about 20 requests of the
# tight organization, 300 requests at once spread over the instances.
if [ "$budgets" -gt 0 ]; then
    request='{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}'
    create_budget '{"org_id":"tight","budget_type":"monthly","budget_amount_usd":"0.0002","hard_limit":true}'
    sleep 6
    seq 1 300 | xargs -P 100 -I{} sh -c 'i={}; url=$(echo "$0" | cut -d" " -f$(( i % $1 + 1 ))); curl -s -o /dev/null -w "%{http_code}\n" -H "authorization: Bearer $2" -H "content-type: application/json" -d "$3" "http://$url/v1/chat/completions"' \
        "${budgets_urls[*]}" "$instances" "$tight_key" "$request" >"$work/tight.codes"
    sleep 2
    spent=$(curl -sf "http://127.0.0.1:$budgets_port/api/v1/usage/records?org_id=tight&limit=1000" -H "authorization: Bearer $budgets_admin" \
        | python3 -c 'import json,sys; print(sum(r["cost_nano_usd"] or 0 for r in json.load(sys.stdin)["data"]))')
    echo "overspend: $(grep -c '^200' "$work/tight.codes") answered, $(grep -c '^429' "$work/tight.codes") refused (429)," \
        "other: $(grep -vcE '^(200|429)' "$work/tight.codes"); ledger spend $spent nano-USD against a limit of 200000" \
        "over $instances instance(s)"
fi

# Reconciliation (issue 9): every Tollgate stops as an operator would stop
# it (SIGTERM: in-flight exchanges finish, the recorder flushes), then each
# database's raw records must agree with its rollups, budget spend and
# alert minutes to the nano-dollar. A handful of SUMs; the databases stay
# in the temporary folder (or on PostgreSQL) until the checks are done.
failed=0
bench_stop "tollgate (${#servers[@]} server(s))" "${servers[@]}" || failed=1
servers=()
for ledger in "${ledgers[@]}"; do
    bench_check_ledger "${ledger%% *}" "${ledger#* }" || failed=1
done

# (The budgets and alerts variants warn by design: thresholds, alerts.)
for log in "$work"/tollgate.log "$work"/tg-*.log; do
    [ -e "$log" ] || continue
    if grep -qiE 'error|warn' "$log"; then
        echo "$(basename "$log" .log) logged warnings or errors:" >&2
        grep -iE 'error|warn' "$log" | sort | uniq -c | sort -rn | head -5 >&2
    fi
done
if [ "$failed" != 0 ]; then
    echo "the reconciliation failed (see above)" >&2
    exit 1
fi
