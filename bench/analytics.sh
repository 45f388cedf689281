#!/usr/bin/env bash
# Analytics at scale (issue 6, "Measure"): fills a database with RECORDS
# synthetic records over DAYS days through `tollgate generate` (the recorder
# path), reports the fill rate and the database size, then serves it and
# measures stats, daily series, model performance (30-day windows), hourly
# series and projections, and the CSV and NDJSON export rate with the
# server's memory. Then the server is stopped with SIGTERM and
# `tollgate check-ledger` reconciles the database (issue 9): the script fails
# if the raw records disagree with the rollups, the budget spend or the
# alert minutes. Run by hand or by bench/suite.sh; figures go to
# docs/benchmarks.md.
#
#   bench/analytics.sh                                   # SQLite, 10M records over 90 days
#   RECORDS=1000000 bench/analytics.sh                   # smaller
#   DATABASE=postgres://postgres@127.0.0.1:5432/postgres bench/analytics.sh
#       # a fresh database on that server, dropped afterwards
#
# Settings: RECORDS (10000000), DAYS (90), REQUESTS (40 per query kind),
# PORT (18110), KEEP_WORKDIR=1 (keep the SQLite file / PostgreSQL database).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

records="${RECORDS:-10000000}"
days="${DAYS:-90}"
requests="${REQUESTS:-40}"
port="${PORT:-18110}"
database="${DATABASE:-sqlite}"

bin=$(bench_build_tollgate)
bench=$(bench_build_bench analytics)

work=$(mktemp -d -t tollgate-analytics-bench.XXXXXX)
server=
pg_name=
cleanup() {
    [ -z "$server" ] || kill -TERM "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ -n "$pg_name" ] && [ "${KEEP_WORKDIR:-0}" != 1 ]; then
        psql "$database" -qc "DROP DATABASE IF EXISTS $pg_name WITH (FORCE)" >/dev/null || true
    fi
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then echo "kept $work ${pg_name}"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [ "$database" = sqlite ]; then
    url="sqlite://$work/tollgate.db"
else
    pg_name="tollgate_bench_$(date +%s)"
    psql "$database" -qc "CREATE DATABASE $pg_name" >/dev/null
    url="${database%/*}/$pg_name"
fi
export DATABASE_URL="$url" TOLLGATE_LOG=warn TOLLGATE_ADMIN_TOKEN=bench
export TOLLGATE_LISTEN="127.0.0.1:$port"
cd "$work"

echo "machine: $(bench_machine)"
echo "== $records records over $days days into ${database%%:*}"
started=$(date +%s.%N)
/usr/bin/time -f "generate: peak RSS %M KiB" "$bin" generate --records "$records" --days "$days" 2>&1 | grep -v '^ *generating\|writing' || true
finished=$(date +%s.%N)
awk -v r="$records" -v a="$started" -v b="$finished" 'BEGIN { printf "fill: %.0f s, %.0f records/s\n", b - a, r / (b - a) }'
end=$(date -u +%Y-%m-%dT%H:%M:%SZ)

if [ "$database" = sqlite ]; then
    sqlite3 "$work/tollgate.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null 2>&1 || true
    size=$(stat -c %s "$work/tollgate.db")
    echo "database size: $(awk -v s="$size" -v r="$records" 'BEGIN { printf "%.0f MB total, %.0f MB per million records", s/1e6, s/1e6/(r/1e6) }')"
    if command -v sqlite3 >/dev/null; then
        sqlite3 "$work/tollgate.db" "SELECT name, SUM(pgsize)/1000000 FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 12" 2>/dev/null \
            | awk -F'|' '{ printf "  %-40s %6d MB\n", $1, $2 }' || true
    fi
else
    psql "$url" -Atc "VACUUM ANALYZE" >/dev/null
    size=$(psql "$url" -Atc "SELECT pg_database_size(current_database())")
    echo "database size: $(awk -v s="$size" -v r="$records" 'BEGIN { printf "%.0f MB total, %.0f MB per million records", s/1e6, s/1e6/(r/1e6) }')"
    psql "$url" -Atc "SELECT relname, pg_total_relation_size(oid)/1000000 FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC LIMIT 8" \
        | awk -F'|' '{ printf "  %-40s %6d MB\n", $1, $2 }'
fi

"$bin" serve >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
"$bench" --url "http://127.0.0.1:$port" --token bench --end "$end" --days "$days" \
    --requests "$requests" --pid "$server"

# Reconciliation: the server only read, but it is stopped as an operator
# would stop it before the database is checked (and, on PostgreSQL, dropped).
failed=0
bench_stop "tollgate serve" "$server" || failed=1
server=
bench_check_ledger "analytics ${database%%:*}" "$url" || failed=1
exit "$failed"
