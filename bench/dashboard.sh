#!/usr/bin/env bash
# The dashboard (issue 8, "Measure"): the first load's size (page and every
# file it names), and each tab's data requests — the same calls with the
# same parameters the page makes, through a session cookie — timed against
# a database of RECORDS records over DAYS days, as an admin (every
# organization) and as a member (their own rows). Run by hand; figures go
# to docs/benchmarks.md.
#
#   bench/dashboard.sh                       # SQLite, 10M records over 90 days
#   DB=/path/to/filled.db bench/dashboard.sh # reuse a SQLite file (filled if missing)
#   DATABASE_URL=postgres://…/filled_db bench/dashboard.sh   # a filled PostgreSQL database
#
# Settings: RECORDS (10000000), DAYS (90), ROUNDS (30 per request), PORT (18120),
# BIN (default: the release binary, built with cargo; CARGO_TARGET_DIR is respected).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

records="${RECORDS:-10000000}"
days="${DAYS:-90}"
rounds="${ROUNDS:-30}"
port="${PORT:-18120}"
bin="${BIN:-}"
[ -n "$bin" ] || bin=$(bench_build_tollgate)

work=$(mktemp -d -t tollgate-dashboard-bench.XXXXXX)
server=
cleanup() {
    [ -z "$server" ] || kill -TERM "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${DATABASE_URL:-}" ]; then
    db="${DB:-$PWD/target/bench-dashboard.db}"
    export DATABASE_URL="sqlite://$db"
    if [ ! -e "$db" ]; then
        echo "== filling $db: $records records over $days days"
        (cd "$work" && "$bin" generate --records "$records" --days "$days" 2>&1 | grep -v '^ *generating\|writing' || true)
    fi
    size=$(du -b "$db" | cut -f1)
else
    size=$(psql "$DATABASE_URL" -Atc "SELECT pg_database_size(current_database())")
fi
export TOLLGATE_LOG=warn TOLLGATE_ADMIN_TOKEN=bench TOLLGATE_LISTEN="127.0.0.1:$port"
base="http://127.0.0.1:$port"
member_key=$(cd "$work" && "$bin" keys create --org acme --user acme-user-2 --role member --name bench 2>/dev/null)
total=$(cd "$work" && "$bin" report --since 90d 2>/dev/null | awk '/^Requests/ {print $2; exit}' || true)
echo "== $(nproc) cores; ${DATABASE_URL%%:*} database of $((size / 1048576)) MiB ${total:+($total requests in 90 days)}"

(cd "$work" && exec "$bin" serve) &
server=$!
for _ in $(seq 1 600); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== first load (what a browser downloads on a first visit)"
curl -fsS "$base/admin/ai-usage" -o "$work/index.html"
first=$(stat -c %s "$work/index.html")
printf "  %-40s %8d bytes\n" "/admin/ai-usage" "$first"
for asset in $(grep -o '/admin/ai-usage/assets/[^"]*' "$work/index.html" | sort -u); do
    bytes=$(curl -fsS "$base$asset" | wc -c)
    printf "  %-40s %8d bytes\n" "$asset" "$bytes"
    first=$((first + bytes))
done
printf "  %-40s %8d bytes (%d KiB)\n" "total" "$first" "$((first / 1024))"

# Sessions, as the page gets them.
login() {
    curl -fsS -c "$work/$1.jar" -H 'content-type: application/json' \
        -d "{\"key\":\"$2\"}" "$base/admin/ai-usage/session" >/dev/null
}
login admin bench
login member "$member_key"

start=$(date -u -d "29 days ago" +%F)
day_ago=$(date -u -d "1 day ago" +%FT%TZ)

# Times one request ROUNDS times (after one warm-up) and prints p50/p95/max.
measure() {
    local who=$1 tab=$2 path=$3
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -b "$work/$who.jar" "$base$path")
    for _ in $(seq 1 "$rounds"); do
        curl -s -o /dev/null -w '%{time_total}\n' -b "$work/$who.jar" "$base$path"
    done | sort -n | awk -v who="$who" -v tab="$tab" -v path="$path" -v status="$status" '
        { t[NR] = $1 * 1000 }
        END {
            p50 = t[int(NR * 0.50 + 0.5)]; p95 = t[int(NR * 0.95 + 0.5)]
            printf "  %-7s %-12s %-62s %3s  p50 %6.1f  p95 %6.1f  max %6.1f ms\n", who, tab, path, status, p50, p95, t[NR]
        }'
}

echo "== each tab's data requests, ${rounds} rounds each (status, then milliseconds)"
for who in admin member; do
    measure "$who" common "/api/v1/orgs"
    measure "$who" common "/api/v1/users"
    measure "$who" overview "/api/v1/usage/stats?start_date=$start"
    measure "$who" overview "/api/v1/usage/daily?start_date=$start"
    measure "$who" overview "/api/v1/usage/hourly?start_date=$day_ago"
    measure "$who" overview "/api/v1/alerts?status=active&limit=1000"
    measure "$who" providers "/api/v1/models/performance?start_date=$start"
    measure "$who" alerts "/api/v1/alerts?status=acknowledged&limit=1000"
    measure "$who" alerts "/api/v1/alerts?limit=200"
    measure "$who" projections "/api/v1/projections?days=30"
    measure "$who" budgets "/api/v1/budgets"
    measure "$who" usage "/api/v1/usage/records?limit=50"
    measure "$who" usage "/api/v1/usage/records?limit=50&model=gpt-4.1"
    measure "$who" usage "/api/v1/usage/records?limit=50&provider=local&task_type=embedding"
done
measure admin providers "/api/v1/providers"
measure admin alerts "/api/v1/webhooks"
measure admin overview "/api/v1/usage/stats?start_date=$start&org_id=globex"
measure admin overview "/api/v1/usage/stats?start_date=$start&user_id=acme-user-2"
measure admin overview "/api/v1/usage/daily?start_date=$start&provider=openrouter"
measure admin usage "/api/v1/usage/records?limit=50&user_id=acme-user-2"
measure admin usage "/api/v1/usage/records?limit=50&org_id=initech&model=o4-mini"
