#!/usr/bin/env bash
# The benchmark suite (issue 9): every load benchmark in sequence on this
# machine, written up as one markdown report, target/bench-suite/report.md,
# with each part's raw log beside it. Each part names the command that
# produced it, so any table can be reproduced on its own.
#
#   bench/suite.sh                       # everything: about 15-20 min on 2 cores once built
#   QUICK=1 bench/suite.sh               # a smoke run (about 2 min): tiny durations and sizes,
#                                        # figures meaningless
#   SUITE_RECORDS=10000000 bench/suite.sh          # analytics at 10M records: about 1 h
#                                                  # (the PostgreSQL fill takes 30-40 min)
#   SUITE_PARTS="gateway durability" bench/suite.sh
#
# Parts, in order (SUITE_PARTS picks some; the report keeps that order):
#   gateway       WITH_LITELLM=1 bench/gateway.sh: the fake upstream direct, through
#                 Tollgate, through LiteLLM's proxy (installed into target/litellm-venv
#                 from PyPI on first use): concurrency 1, fixed rates, closed-loop
#                 throughput, streaming, peak RSS
#   durability    DURABILITY=off,process,fsync bench/gateway.sh, phases c1 and rates:
#                 the crash journal's cost, three Tollgates side by side
#   ingest        bench/ingest.sh: records/s into the store, the recorder and the HTTP
#                 API, SQLite and PostgreSQL
#   analytics     bench/analytics.sh: fill with `tollgate generate`, then stats, daily,
#                 model performance, hourly, projections and export, on SQLite and
#                 on PostgreSQL
# Every part ends with the reconciliation check on each database it wrote
# (`tollgate check-ledger`), collected at the end of the report; a part fails
# if its check disagrees.
#
# Settings (environment):
#   QUICK=1                smoke run (seconds per phase, 5,000 ingest and 20,000 analytics records)
#   SUITE_PARTS            "gateway durability ingest analytics" (default: all)
#   SUITE_RECORDS          analytics records (1000000; QUICK 20000)
#   SUITE_DAYS             analytics days (90)
#   SUITE_INGEST_RECORDS   ingest records per run (200000; QUICK 5000)
#   SUITE_LITELLM          1 (default) to include LiteLLM in the gateway part, 0 to leave it out
#   SUITE_POSTGRES         a PostgreSQL server URL for the PostgreSQL rows (fresh databases are
#                          made and dropped on it; default postgres://postgres@127.0.0.1:5432/postgres);
#                          empty: SQLite only
#   SUITE_BENCH_ARGS       extra flags for benches/gateway.rs in both gateway parts
#   SUITE_OUT              where the report and logs go (target/bench-suite)
# The release build uses cargo's target directory (CARGO_TARGET_DIR is respected).
# The parts' own settings (RECORDS, DATABASE, DURABILITY, BENCH_ARGS, BUDGETS, …,
# and every TOLLGATE_* variable) are cleared from the environment, so that each
# command in the report is the whole story; the ports, LITELLM_VENV, PGSSLMODE and
# KEEP_WORKDIR pass through.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
unset RECORDS DAYS REQUESTS DATABASE DATABASE_URL DURABILITY BENCH_ARGS WITH_LITELLM \
    BUDGETS BUDGETS_DATABASE_URL BUDGETS_INSTANCES ALERTS_ORGS MODES BACKENDS POSTGRES
while IFS= read -r variable; do unset "$variable"; done < <(compgen -e | grep '^TOLLGATE_' || true)
# shellcheck source=bench/common.sh
. bench/common.sh

quick="${QUICK:-0}"
parts="${SUITE_PARTS:-gateway durability ingest analytics}"
days="${SUITE_DAYS:-90}"
litellm="${SUITE_LITELLM:-1}"
postgres="${SUITE_POSTGRES-postgres://postgres@127.0.0.1:5432/postgres}"
bench_args="${SUITE_BENCH_ARGS:-}"
out=$(realpath -m "${SUITE_OUT:-target/bench-suite}")
if [ "$quick" = 1 ]; then
    records="${SUITE_RECORDS:-20000}"
    ingest_records="${SUITE_INGEST_RECORDS:-5000}"
    requests=5
    # Every phase shortened to about a second; one rate; a short wait for a
    # quiet machine (the figures of a smoke run mean nothing anyway).
    gateway_args="--warmup 0.5 --phase-warmup 0.2 --c1-seconds 1 --rates 200 --rate-seconds 1"
    gateway_args+=" --max-connections 4 --max-seconds 1 --stream-seconds 1 --drain 2"
    gateway_args+=" --settle-seconds 3 --quiet-wait 1"
else
    records="${SUITE_RECORDS:-1000000}"
    ingest_records="${SUITE_INGEST_RECORDS:-200000}"
    requests=40
    gateway_args=""
fi
gateway_args="${gateway_args:+$gateway_args }$bench_args"
gateway_args="${gateway_args% }"

for part in $parts; do
    case "$part" in
        gateway | durability | ingest | analytics) ;;
        *) echo "SUITE_PARTS: unknown part $part (gateway, durability, ingest, analytics)" >&2; exit 2 ;;
    esac
done
if [ -n "$postgres" ] && ! psql "$postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL is not reachable at $postgres; set SUITE_POSTGRES= to run SQLite only" >&2
    exit 2
fi

mkdir -p "$out"
rm -rf "${out:?}"/*.log "${out:?}/report.md" "${out:?}/bin"
report="$out/report.md"
suite_started=$(date +%s)
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
machine=$(bench_machine)
finished=0
build_seconds=0

# The parts run so far: id, title, command, seconds, status.
ids=()
titles=()
commands=()
seconds=()
statuses=()

# run ID TITLE COMMAND: runs COMMAND (shell words, environment assignments
# first) from the repository root, its output to the terminal and to
# $out/ID.log, and rewrites the report.
run() {
    local id=$1 title=$2 command=$3 began status
    echo
    echo "=== $title: $command"
    began=$(date +%s)
    (eval "$command") 2>&1 | tee "$out/$id.log"
    status=${PIPESTATUS[0]}
    ids+=("$id")
    titles+=("$title")
    commands+=("$command")
    seconds+=($(($(date +%s) - began)))
    statuses+=("$status")
    echo "=== $title: $([ "$status" = 0 ] && echo "done" || echo "FAILED (exit $status)") in $(($(date +%s) - began)) s"
    write_report
}

duration() {
    local s=$1
    if [ "$s" -ge 3600 ]; then
        printf '%d h %02d min' $((s / 3600)) $((s % 3600 / 60))
    elif [ "$s" -ge 60 ]; then
        printf '%d min %02d s' $((s / 60)) $((s % 60))
    else
        printf '%d s' "$s"
    fi
}

# Lines of a log worth keeping in the report, as a list.
notes() {
    grep -E "$2" "$1" | sed 's/^/- /' || true
}

# The gateway bench's table (the only lines starting with "|").
gateway_section() {
    local log=$1
    notes "$log" '^(durability:|litellm [0-9]|budgets:|alerts:|machine quiet|WARNING)'
    echo
    grep '^|' "$log" || echo "(no table: the run did not finish; see the log)"
    echo
    notes "$log" '(memory: peak RSS|: stopped \(SIGTERM\)|exited with status|did not stop|logged warnings)'
}

# The durability run's table again, as the journal's cost: each setting's
# figures and their difference from "off" (no journal).
durability_cost() {
    awk -F'|' '
        function trim(text) { gsub(/^ +| +$/, "", text); return text }
        function difference(value, base) {
            if (value !~ /^[0-9.]+$/ || base !~ /^[0-9.]+$/) return "-"
            return sprintf("%+.3f", value - base)
        }
        /^\| measure \|/ {
            for (i = 2; i < NF; i++) column[trim($i)] = i
            if (!("tg-off" in column) || !("tg-process" in column) || !("tg-fsync" in column)) exit
            print "| measure | off | process | fsync | process − off | fsync − off |"
            print "| --- | ---: | ---: | ---: | ---: | ---: |"
            table = 1
            next
        }
        table && /^\| ---/ { next }
        table && /^\| / {
            off = trim($column["tg-off"]); process = trim($column["tg-process"]); fsync = trim($column["tg-fsync"])
            print "| " trim($2) " | " off " | " process " | " fsync " | " difference(process, off) " | " difference(fsync, off) " |"
        }' "$1"
}

# One row per ingest run: its figures and its reconciliation.
ingest_section() {
    echo "| backend | path | records | seconds | records/s | peak RSS (MiB) | reconciliation |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
    awk '
        /^(sqlite|postgres) +(store|recorder|http) +[0-9]+ records in/ {
            key = $1 " " $2
            row[key] = "| " $1 " | " $2 " | " $3 " | " $6 " | " $9 " | " $(NF - 1) " |"
            order[++n] = key
        }
        /^--- reconciliation: ingest .*: (agree|DISAGREE) \(/ {
            split($0, words, " ")
            key = words[4] " " substr(words[5], 1, length(words[5]) - 1)
            result[key] = words[6]
        }
        END {
            for (i = 1; i <= n; i++) {
                key = order[i]
                print row[key] " " (key in result ? result[key] : "not run") " |"
            }
        }' "$1"
}

analytics_section() {
    local log=$1
    notes "$log" '^(== |fill:|database size:|generate: peak RSS)'
    echo
    grep '^|' "$log" || echo "(no table: the run did not finish; see the log)"
    echo
    notes "$log" '^(export |WARNING)'
}

# Every reconciliation in the logs: a summary table, then the tables.
reconciliation_section() {
    local id
    echo "| part | database | records | cost (USD) | result | check took |"
    echo "| --- | --- | ---: | ---: | --- | ---: |"
    for id in "${ids[@]}"; do
        awk -v part="$id" '
            /^--- reconciliation: .*: (agree|DISAGREE) \(/ {
                line = $0
                sub(/^--- reconciliation: /, "", line)
                took = line
                sub(/.*took /, "", took)
                sub(/\)$/, "", took)
                verdict = (line ~ /: agree \(/) ? "agree" : "**DISAGREE**"
                sub(/: (agree|DISAGREE) \(.*/, "", line)
                print "| " part " | " line " | " records " | " cost " | " verdict " | " took " |"
                records = "?"; cost = "?"
                next
            }
            /^--- reconciliation: / { records = "?"; cost = "?"; next }
            $1 == "ai_provider_usage" { records = $2; cost = $3 }
        ' "$out/$id.log"
    done
    echo
    echo "<details><summary>The tables (requests and cost of the raw records and of each table derived from them)</summary>"
    echo
    for id in "${ids[@]}"; do
        awk -v part="$id" '
            /^--- reconciliation: .*: (agree|DISAGREE) \(/ { print "```"; print ""; inside = 0; next }
            /^--- reconciliation: / {
                line = $0
                sub(/^--- reconciliation: /, "", line)
                name = line
                sub(/ \(.*/, "", name)
                where = substr(line, length(name) + 2)
                print part ": **" name "** " where
                print ""
                print "```"
                inside = 1
                next
            }
            inside { print }
        ' "$out/$id.log"
    done
    echo "</details>"
}

write_report() {
    local i failed=0 total
    total=$(($(date +%s) - suite_started))
    {
        echo "# Tollgate benchmark suite"
        echo
        echo "- machine: $machine"
        echo "- started $started_at; $([ "$finished" = 1 ] && echo "took" || echo "running for") $(duration "$total")" \
            "(release build ${build_seconds} s); \`bench/suite.sh\` with" \
            "QUICK=$quick SUITE_PARTS=\"$parts\" SUITE_RECORDS=$records SUITE_INGEST_RECORDS=$ingest_records" \
            "SUITE_LITELLM=$litellm SUITE_POSTGRES=${postgres:-(none)}"
        if [ "$quick" = 1 ]; then
            echo "- **QUICK=1: a smoke run with tiny durations and sizes; the figures mean nothing.**"
        fi
        echo "- raw logs: the \`.log\` files beside this report; binaries: built once at the start" \
            "(release) and copied to \`bin/\`, so every part measures the same build"
        echo
        echo "| part | command | took | result |"
        echo "| --- | --- | ---: | --- |"
        for i in "${!ids[@]}"; do
            local result=ok
            if [ "${statuses[$i]}" != 0 ]; then
                result="**FAILED** (exit ${statuses[$i]}; see ${ids[$i]}.log)"
                failed=1
            fi
            echo "| ${titles[$i]} | \`${commands[$i]}\` | $(duration "${seconds[$i]}") | $result |"
        done
        for i in "${!ids[@]}"; do
            echo
            echo "## ${titles[$i]}"
            echo
            echo "\`${commands[$i]}\` ($(duration "${seconds[$i]}"), log: ${ids[$i]}.log)"
            echo
            case "${ids[$i]}" in
                gateway) gateway_section "$out/${ids[$i]}.log" ;;
                durability)
                    gateway_section "$out/${ids[$i]}.log"
                    echo
                    echo "The journal's cost: each setting against \"off\" (no journal), same run:"
                    echo
                    durability_cost "$out/${ids[$i]}.log"
                    ;;
                ingest) ingest_section "$out/${ids[$i]}.log" ;;
                analytics-*) analytics_section "$out/${ids[$i]}.log" ;;
            esac
        done
        if [ "${#ids[@]}" -gt 0 ]; then
            echo
            echo "## Reconciliation"
            echo
            echo "After each part's load, each Tollgate it started was stopped with SIGTERM and"
            echo "\`tollgate check-ledger\` summed the raw records and each table derived from them"
            echo "(model performance, daily and hourly rollups, budget spend, alert minutes). Ingest runs"
            echo "also check that every record sent is in the ledger."
            echo
            reconciliation_section
        fi
    } >"$report.tmp"
    mv "$report.tmp" "$report"
    return "$failed"
}

echo "machine: $machine"
echo "building (release)"
build_started=$(date +%s)
cargo build --release --quiet --bins --benches || exit 1
# Every part measures these binaries, copied: a change to the sources
# during the run (or another build) cannot swap them between parts.
mkdir -p "$out/bin"
BENCH_TOLLGATE_BIN=$(bench_build_tollgate) || exit 1
cp "$BENCH_TOLLGATE_BIN" "$out/bin/tollgate"
export BENCH_TOLLGATE_BIN="$out/bin/tollgate"
for name in gateway ingest analytics; do
    path=$(bench_build_bench "$name") || exit 1
    cp "$path" "$out/bin/$name"
    export "BENCH_$(echo "$name" | tr '[:lower:]' '[:upper:]')_BIN=$out/bin/$name"
done
build_seconds=$(($(date +%s) - build_started))
echo "built in $build_seconds s"

for part in $parts; do
    case "$part" in
        gateway)
            command="WITH_LITELLM=$litellm"
            [ -z "$gateway_args" ] || command+=" BENCH_ARGS='$gateway_args'"
            run gateway "Gateway: direct, Tollgate$([ "$litellm" = 1 ] && echo ", LiteLLM")" \
                "$command bench/gateway.sh"
            ;;
        durability)
            # Concurrency 1 and the fixed rates: what the journal adds to each
            # answer; the closed loops and streams would say the same.
            args="--phases c1,rates${gateway_args:+ $gateway_args}"
            run durability "Gateway: the recorder's durability (off, process, fsync)" \
                "DURABILITY=off,process,fsync BENCH_ARGS='$args' bench/gateway.sh"
            ;;
        ingest)
            command="RECORDS=$ingest_records"
            if [ -n "$postgres" ]; then
                command+=" POSTGRES=$postgres"
            else
                command+=" BACKENDS=sqlite"
            fi
            run ingest "Ingest rate" "$command bench/ingest.sh"
            ;;
        analytics)
            run analytics-sqlite "Analytics: SQLite, $records records over $days days" \
                "RECORDS=$records DAYS=$days REQUESTS=$requests bench/analytics.sh"
            if [ -n "$postgres" ]; then
                run analytics-postgres "Analytics: PostgreSQL, $records records over $days days" \
                    "RECORDS=$records DAYS=$days REQUESTS=$requests DATABASE=$postgres bench/analytics.sh"
            fi
            ;;
    esac
done

echo
finished=1
if write_report; then
    echo "=== the suite took $(duration $(($(date +%s) - suite_started))); report: $report"
else
    echo "=== the suite took $(duration $(($(date +%s) - suite_started))); some parts FAILED; report: $report" >&2
    exit 1
fi
