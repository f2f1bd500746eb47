#!/usr/bin/env bash
# The flex-checkout benchmark (see BENCHMARKS.md for the method and the last numbers).
#
#   bash bench/run.sh
#
# Builds the release binary (honours CARGO_TARGET_DIR) and bench/loadgen, starts the server on a
# fresh SQLite database in a temp dir, and measures, in one run:
#   1. GET /pay/c/<id> under wrk, next to nginx serving the same HTML bytes as a static file;
#   2. latency of the page at a fixed 1,000 requests/s (open loop, bench/loadgen), for one page asked
#      for again and again and for a different session at every request (first views);
#   3. checkout sessions created per second through the API, next to a plain INSERT loop (sqlite3)
#      writing the same rows into scratch tables of the same database file;
#   4. the server's peak memory (VmHWM) and the byte sizes of the page's HTML, CSS and JavaScript.
# Prints a summary and writes it to bench/out/results-<date>.md. Everything listens on 127.0.0.1
# only; every process and the temp dir are removed on exit.
#
# Knobs (environment): WRK_THREADS (2) WRK_CONNECTIONS (32) WRK_DURATION (10 s) WRK_ROUNDS (2)
# WARMUP (3 s) RATE (1000/s) RATE_DURATION (15 s) POST_CONCURRENCY (8) POST_DURATION (10 s)
# SKIP_BUILD=1 (use already-built binaries), BENCH_COMMIT (label for a tree that is not a git clone).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_CONNECTIONS="${WRK_CONNECTIONS:-32}"
WRK_DURATION="${WRK_DURATION:-10}"
WRK_ROUNDS="${WRK_ROUNDS:-2}"
WARMUP="${WARMUP:-3}"
RATE="${RATE:-1000}"
RATE_DURATION="${RATE_DURATION:-15}"
POST_CONCURRENCY="${POST_CONCURRENCY:-8}"
POST_DURATION="${POST_DURATION:-10}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
for n in WRK_THREADS WRK_CONNECTIONS WRK_DURATION WRK_ROUNDS WARMUP RATE RATE_DURATION POST_CONCURRENCY POST_DURATION; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || { echo "bench: $n must be a whole number" >&2; exit 2; }
done
((WRK_DURATION <= 120 && RATE_DURATION <= 120 && POST_DURATION <= 120 && WARMUP <= 30)) ||
    { echo "bench: durations are capped at 120 s (warm-up 30 s)" >&2; exit 2; }

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

# ---------------------------------------------------------------- clean-up
TMP="$(mktemp -d "${TMPDIR:-/tmp}/flex-bench.XXXXXX")"
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. packages
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v curl >/dev/null || need+=(curl)
command -v gzip >/dev/null || need+=(gzip)
if ((${#need[@]})); then
    log "installing Debian packages: ${need[*]}"
    SUDO=""
    (($(id -u) == 0)) || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    pkgs=()
    for p in "${need[@]}"; do
        if [[ "$p" == nginx ]]; then
            # nginx-light where it still exists (it is a transitional package on Debian 12).
            $SUDO apt-get install -y -qq --no-install-recommends nginx-light ||
                $SUDO apt-get install -y -qq --no-install-recommends nginx
        else
            pkgs+=("$p")
        fi
    done
    ((${#pkgs[@]} == 0)) || $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
command -v cargo >/dev/null || die "cargo is needed to build the server (https://rustup.rs)"

# ---------------------------------------------------------------- 2. build and start
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building the release binary and bench/loadgen (target dir $TARGET_DIR)"
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet)
    cargo build --release --quiet --manifest-path "$REPO/bench/loadgen/Cargo.toml" --target-dir "$TARGET_DIR"
fi
BIN="$TARGET_DIR/release/flex-checkout"
LOADGEN="$TARGET_DIR/release/loadgen"
[[ -x "$BIN" && -x "$LOADGEN" ]] || die "missing $BIN or $LOADGEN"

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

wait_http() { # url pid what
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "bench: $3 exited during start-up" >&2; return 1; }
        sleep 0.1
    done
    echo "bench: $3 did not answer at $1 within 30 s" >&2
    return 1
}

DB_FILE="$TMP/bench.db"
DB_URL="sqlite://$DB_FILE"

log "creating a merchant and a test key with the CLI"
# The database is given through DATABASE_URL, which every subcommand reads.
export DATABASE_URL="$DB_URL"
MERCHANT="$("$BIN" merchants create --name "Bench Store" | tail -n 1)"
KEY="$("$BIN" keys create --name bench --merchant "$MERCHANT" | tail -n 1)"
[[ "$KEY" == fsk_test_* ]] || die "unexpected key output: $KEY"

PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
"$BIN" serve --host 127.0.0.1 --port "$PORT" --public-url "$BASE" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_http "$BASE/healthz" "$SERVER_PID" "the server" || { cat "$TMP/server.log" >&2; exit 1; }

api() { # path json -> body (fails on non-2xx)
    curl -fsS -X POST "$BASE$1" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' --data-binary "$2"
}
json_field() { grep -o "\"$1\": *\"[^\"]*\"" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/'; }

log "creating the seed's product, price and checkout session through the API"
PRODUCT_ID="$(api /v1/products '{"product": {"name": "Test Product","description": "Test Product Description","visit_type": "gym","hsa_fsa_eligibility": "letter_of_medical_necessity"}}' | json_field product_id)"
PRICE_ID="$(api /v1/prices "{\"price\": {\"product\": \"$PRODUCT_ID\",\"description\": \"Our awesome new price\",\"unit_amount\": 4999,\"recurring\": {\"interval\": \"monthly\"}}}" | json_field price_id)"
SESSION_JSON="{\"checkout_session\": {\"line_items\": [{\"price\": \"$PRICE_ID\",\"quantity\": 1}],\"success_url\": \"\",\"mode\": \"subscription\",\"cancel_url\": \"\"}}"
printf '%s' "$SESSION_JSON" >"$TMP/session.json"
SESSION_ID="$(api /v1/checkout/sessions "$SESSION_JSON" | json_field checkout_session_id)"
[[ -n "$PRODUCT_ID" && -n "$PRICE_ID" && -n "$SESSION_ID" ]] || die "could not create the seed objects"
PAGE_URL="$BASE/pay/c/$SESSION_ID"

# ---------------------------------------------------------------- 3. the page as a static file
mkdir -p "$TMP/www" "$TMP/nginx-temp"
chmod 0711 "$TMP"
chmod 0755 "$TMP/www"
code="$(curl -sS -D "$TMP/page.headers" -o "$TMP/www/page.html" -w '%{http_code}' "$PAGE_URL")"
[[ "$code" == 200 ]] || die "GET $PAGE_URL answered $code"
chmod 0644 "$TMP/www/page.html"
header_value() { grep -i "^$1:" "$TMP/page.headers" | head -n 1 | cut -d: -f2- | sed 's/^ *//; s/\r$//'; }
CONTENT_TYPE="$(header_value content-type)"
[[ -n "$CONTENT_TYPE" ]] || die "the page has no Content-Type"

NGINX_PORT="$(free_port)"
while [[ "$NGINX_PORT" == "$PORT" ]]; do NGINX_PORT="$(free_port)"; done
NPROC="$(nproc)"
{
    echo "worker_processes $NPROC;"
    echo "pid $TMP/nginx.pid;"
    echo "error_log $TMP/nginx-error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "    access_log off;"
    # Temp paths the binary was built with live under /var/lib/nginx; keep them in the temp dir.
    for kind in client-body fastcgi proxy scgi uwsgi; do
        if "$NGINX" -V 2>&1 | grep -q -- "--http-$kind-temp-path"; then
            echo "    ${kind//-/_}_temp_path $TMP/nginx-temp/$kind;"
        fi
    done
    echo "    sendfile on;"
    echo "    keepalive_requests 1000000;"
    echo "    types { }"
    echo "    default_type \"$CONTENT_TYPE\";"
    echo "    server {"
    echo "        listen 127.0.0.1:$NGINX_PORT;"
    echo "        root $TMP/www;"
    echo "        location = /page.html {"
    # The same response headers the server sends with the page, so both answers are alike.
    for h in Content-Security-Policy X-Content-Type-Options Referrer-Policy X-Frame-Options Cache-Control; do
        v="$(header_value "$h")"
        [[ -z "$v" ]] || echo "            add_header $h \"$v\" always;"
    done
    echo "        }"
    echo "    }"
    echo "}"
} >"$TMP/nginx.conf"
"$NGINX" -e "$TMP/nginx-error.log" -p "$TMP" -c "$TMP/nginx.conf" -g 'daemon off;' 2>>"$TMP/nginx-error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
NGINX_URL="http://127.0.0.1:$NGINX_PORT/page.html"
wait_http "$NGINX_URL" "$NGINX_PID" "nginx" || { cat "$TMP/nginx-error.log" >&2; exit 1; }
curl -fsS "$NGINX_URL" | cmp -s - "$TMP/www/page.html" || die "nginx does not serve the same bytes"
curl -fsS "$PAGE_URL" | cmp -s - "$TMP/www/page.html" || die "the page's HTML changes between requests"
OURS_RESP_BYTES="$(curl -sS -o /dev/null -w '%{size_header}+%{size_download}' "$PAGE_URL")"
NGINX_RESP_BYTES="$(curl -sS -o /dev/null -w '%{size_header}+%{size_download}' "$NGINX_URL")"

# CPU time of everything else on the machine during the measurements: user and system CPU time
# (from /proc/stat; interrupt time is left out, as loopback traffic lands there) less that of this
# script, its finished children (wrk, loadgen, sqlite3, curl), the server and nginx's processes.
HZ="$(getconf CLK_TCK)"
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 }' /proc/stat; } # user + nice + system
proc_ticks() { # pids... -> utime + stime
    local p t=0
    for p in "$@"; do
        [[ -r "/proc/$p/stat" ]] && t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}
own_ticks() { # sets OWN: this shell and its waited-for children, the server, nginx's master and workers
    local s
    times >"$TMP/times" # in this shell, not a subshell
    s="$(awk '{ for (i = 1; i <= NF; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } } END { printf "%.0f", t * '"$HZ"' }' "$TMP/times")"
    OWN=$((s + $(proc_ticks "$SERVER_PID" "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true))))
}
CPU_T0="$(date +%s%N)"; BUSY0="$(busy_ticks)"; own_ticks; OWN0="$OWN"

# ---------------------------------------------------------------- 7a. memory
mem_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }
RSS_START_KB="$(mem_kb VmRSS)"

# ---------------------------------------------------------------- 4. wrk: ours vs nginx
to_ms() { # wrk value like 812.00us, 1.23ms, 1.01s
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}
wrk_run() { # name url round
    local out="$TMP/wrk-$1-$3.txt"
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WARMUP}s" "$2" >/dev/null
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WRK_DURATION}s" --latency "$2" >"$out"
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        cat "$out" >&2
        die "wrk saw errors against $1"
    fi
    local rps p50 p99
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    p50="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
    echo "$1 $3 $rps $p50 $p99" >>"$TMP/wrk.tsv"
    printf '   %-6s round %s: %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms\n' "$1" "$3" "$rps" "$p50" "$p99" >&2
}
log "wrk: $WRK_THREADS threads, $WRK_CONNECTIONS connections, ${WARMUP}s warm-up + ${WRK_DURATION}s, $WRK_ROUNDS round(s), alternating order"
: >"$TMP/wrk.tsv"
for round in $(seq "$WRK_ROUNDS"); do
    if ((round % 2)); then
        wrk_run ours "$PAGE_URL" "$round"
        wrk_run nginx "$NGINX_URL" "$round"
    else
        wrk_run nginx "$NGINX_URL" "$round"
        wrk_run ours "$PAGE_URL" "$round"
    fi
done
wrk_mean() { awk -v n="$1" -v c="$2" '$1 == n { s += $c; k++ } END { printf "%.3f", s / k }' "$TMP/wrk.tsv"; }
OURS_RPS="$(wrk_mean ours 3)"; OURS_P50="$(wrk_mean ours 4)"; OURS_P99="$(wrk_mean ours 5)"
NGINX_RPS="$(wrk_mean nginx 3)"; NGINX_P50="$(wrk_mean nginx 4)"; NGINX_P99="$(wrk_mean nginx 5)"
RPS_RATIO="$(awk -v a="$OURS_RPS" -v b="$NGINX_RPS" 'BEGIN { printf "%.3f", a / b }')"
RSS_AFTER_WRK_KB="$(mem_kb VmRSS)"

# ---------------------------------------------------------------- 5. fixed rate
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
log "fixed rate: $RATE req/s for ${RATE_DURATION}s after ${WARMUP}s warm-up (open loop, bench/loadgen)"
RATE_OURS="$("$LOADGEN" rate --url "$PAGE_URL" --rate "$RATE" --duration "$RATE_DURATION" --warmup "$WARMUP")"
echo "   ours:  $RATE_OURS" >&2
RATE_NGINX="$("$LOADGEN" rate --url "$NGINX_URL" --rate "$RATE" --duration "$RATE_DURATION" --warmup "$WARMUP")"
echo "   nginx: $RATE_NGINX" >&2
RSS_AFTER_RATE_KB="$(mem_kb VmRSS)"

# ---------------------------------------------------------------- 6. sessions per second
SQ() { sqlite3 -batch -bail "$DB_FILE" "$@"; }
table_counts() { # "table rows" for every application table
    local t
    for t in $(SQ "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' AND name NOT LIKE 'bench_ref_%' ORDER BY name"); do
        echo "$t $(SQ "SELECT count(*) FROM \"$t\"")"
    done
}
table_counts >"$TMP/counts-before"
log "sessions: POST /v1/checkout/sessions, $POST_CONCURRENCY concurrent, ${WARMUP}s warm-up + ${POST_DURATION}s"
POST_OUT="$("$LOADGEN" closed --url "$BASE/v1/checkout/sessions" --method POST \
    --header "Authorization: Bearer $KEY" --header 'Content-Type: application/json' \
    --body-file "$TMP/session.json" --concurrency "$POST_CONCURRENCY" --duration "$POST_DURATION" --warmup "$WARMUP")"
echo "   api:   $POST_OUT" >&2
[[ "$(kv "$POST_OUT" failed)" == 0 && "$(kv "$POST_OUT" non_2xx)" == 0 ]] || die "session creation had errors"
RSS_AFTER_POST_KB="$(mem_kb VmRSS)"
table_counts >"$TMP/counts-after"
# Which rows the POSTs wrote (warm-up included), e.g. "checkout_sessions +15000".
API_WRITES="$(LC_ALL=C join "$TMP/counts-before" "$TMP/counts-after" | awk '$3 > $2 { printf "%s%s +%d", sep, $1, $3 - $2; sep = ", " }')"

# The reference: the same rows, copied value for value from the checkout tables (every checkout
# session in the database, and its line items where they have their own table) into scratch tables
# with the same schema and indexes in the same database file, one transaction per session
# (BEGIN IMMEDIATE; INSERT ...; COMMIT), with the server's connection settings (WAL,
# synchronous=NORMAL, foreign_keys=ON), by the sqlite3 CLI.
REF_TABLES=(checkout_sessions)
REF_ORDER=("id")
if [[ -n "$(SQ "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'checkout_line_items'")" ]]; then
    REF_TABLES+=(checkout_line_items)
    REF_ORDER+=("session_id, position")
fi
REF_ROWS="$(SQ 'SELECT count(*) FROM checkout_sessions')"
ref_files=()
for i in "${!REF_TABLES[@]}"; do
    t="${REF_TABLES[$i]}"
    SQ "SELECT sql || ';' FROM sqlite_master WHERE tbl_name = '$t' AND sql IS NOT NULL" |
        sed -e "s/CREATE TABLE $t\\b/CREATE TABLE bench_ref_$t/" \
            -e "s/CREATE \\(UNIQUE \\)\\{0,1\\}INDEX \\([A-Za-z0-9_]*\\) ON $t /CREATE \\1INDEX bench_ref_\\2 ON bench_ref_$t /" \
            >"$TMP/ref-schema-$t.sql"
    grep -q "CREATE TABLE bench_ref_$t" "$TMP/ref-schema-$t.sql" || die "could not copy the schema of $t"
    SQ <"$TMP/ref-schema-$t.sql"
    SQ ".mode insert bench_ref_$t" "SELECT * FROM $t ORDER BY ${REF_ORDER[$i]}" >"$TMP/ref-rows-$t.sql"
    # One INSERT line per session in every table (one line item per session in this benchmark).
    [[ "$(wc -l <"$TMP/ref-rows-$t.sql")" == "$REF_ROWS" ]] || die "$t: expected one row (on one line) per session"
    ref_files+=("$TMP/ref-rows-$t.sql")
done
{
    echo "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;"
    paste -d '\n' "${ref_files[@]}" |
        awk -v k="${#ref_files[@]}" '(NR - 1) % k == 0 { print "BEGIN IMMEDIATE;" } { print } NR % k == 0 { print "COMMIT;" }'
} >"$TMP/ref-loop.sql"
REF_WHAT="${REF_TABLES[*]}"
log "reference: plain INSERT loop of the same $REF_ROWS sessions into copies of: $REF_WHAT (sqlite3)"
t0="$(date +%s%N)"
SQ <"$TMP/ref-loop.sql" >/dev/null
t1="$(date +%s%N)"
[[ "$(SQ 'SELECT count(*) FROM bench_ref_checkout_sessions')" == "$REF_ROWS" ]] || die "the reference loop lost rows"
REF_SECS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
REF_RPS="$(awk -v n="$REF_ROWS" -v s="$REF_SECS" 'BEGIN { printf "%.1f", n / s }')"

API_RPS="$(kv "$POST_OUT" rps)"
POST_RATIO="$(awk -v a="$API_RPS" -v b="$REF_RPS" 'BEGIN { printf "%.3f", a / b }')"
echo "   sqlite3: $REF_ROWS sessions in ${REF_SECS}s = $REF_RPS/s" >&2

# ---------------------------------------------------------------- 5b. first views at a fixed rate
# The fixed-rate run above asks for one page again and again; a real page is mostly asked for once
# or a few times per session. Here every request names another session (those the POSTs created,
# in random order), so no answer can come from anything the server kept from an earlier request
# for the same page.
SQ "SELECT '$BASE/pay/c/' || id FROM checkout_sessions WHERE id <> '$SESSION_ID' ORDER BY random()" >"$TMP/first-view-urls"
FIRST_URLS="$(wc -l <"$TMP/first-view-urls")"
log "first views: $RATE req/s for ${RATE_DURATION}s after ${WARMUP}s warm-up over $FIRST_URLS distinct sessions"
RATE_FIRST="$("$LOADGEN" rate --url-file "$TMP/first-view-urls" --rate "$RATE" --duration "$RATE_DURATION" --warmup "$WARMUP")"
echo "   ours:  $RATE_FIRST" >&2
RSS_AFTER_FIRST_KB="$(mem_kb VmRSS)"
CPU_T1="$(date +%s%N)"; BUSY1="$(busy_ticks)"; own_ticks; OWN1="$OWN"
OTHER_CPU_PCT="$(awk -v b="$((BUSY1 - BUSY0))" -v o="$((OWN1 - OWN0))" -v t0="$CPU_T0" -v t1="$CPU_T1" -v hz="$HZ" -v n="$(nproc)" \
    'BEGIN { x = (b - o) / ((t1 - t0) / 1e9 * hz * n) * 100; if (x < 0) x = 0; printf "%.0f", x }')"
HWM_KB="$(mem_kb VmHWM)"

# ---------------------------------------------------------------- 7b. sizes
HTML_BYTES="$(wc -c <"$TMP/www/page.html")"
HTML_GZ="$(gzip -9c "$TMP/www/page.html" | wc -c)"
mapfile -t ASSETS < <(grep -oE '(href|src)="/static/[^"]+"' "$TMP/www/page.html" | sed -E 's/^(href|src)="//; s/"$//; s/&amp;/\&/g' | sort -u)
CSS_URL="" JS_URL=""
for a in "${ASSETS[@]}"; do
    case "$a" in
        /static/checkout.css*) CSS_URL="$a" ;;
        /static/checkout.js*) JS_URL="$a" ;;
    esac
done
[[ -n "$CSS_URL" ]] || die "the page does not link /static/checkout.css"
asset_bytes() { curl -fsS "$BASE$1" | wc -c; }
asset_gz() { curl -fsS "$BASE$1" | gzip -9c | wc -c; }
CSS_BYTES="$(asset_bytes "$CSS_URL")"; CSS_GZ="$(asset_gz "$CSS_URL")"
if [[ -n "$JS_URL" ]]; then JS_BYTES="$(asset_bytes "$JS_URL")"; JS_GZ="$(asset_gz "$JS_URL")"; else JS_BYTES=0; JS_GZ=0; fi
OTHER_ASSETS="$(printf '%s\n' "${ASSETS[@]}" | grep -vE '^/static/checkout\.(css|js)' | tr '\n' ' ' || true)"
TOTAL_BYTES=$((HTML_BYTES + CSS_BYTES + JS_BYTES))
TOTAL_GZ=$((HTML_GZ + CSS_GZ + JS_GZ))

# ---------------------------------------------------------------- 8. summary
pass() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi; }
R_OK="$(kv "$RATE_OURS" ok)"; R_N="$(kv "$RATE_OURS" requests)"; R_P99="$(kv "$RATE_OURS" p99_ms)"
R_FAIL=$(($(kv "$RATE_OURS" failed) + $(kv "$RATE_OURS" non_2xx)))
T_RATIO="$(pass "$RPS_RATIO >= 0.5")"
T_P99="$(pass "$R_P99 < 5 && $R_FAIL == 0 && $R_OK >= 0.99 * $RATE * $RATE_DURATION")"
F_OK="$(kv "$RATE_FIRST" ok)"; F_P99="$(kv "$RATE_FIRST" p99_ms)"
F_FAIL=$(($(kv "$RATE_FIRST" failed) + $(kv "$RATE_FIRST" non_2xx)))
T_F99="$(pass "$F_P99 < 5 && $F_FAIL == 0 && $F_OK >= 0.99 * $RATE * $RATE_DURATION")"
T_SIZE="$(pass "$TOTAL_BYTES < 30000")"
T_MEM="$(pass "$HWM_KB < 65536")"
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
CPU="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
MEM_TOTAL="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
COMMIT="${BENCH_COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
DIRTY=""
[[ -n "${BENCH_COMMIT:-}" ]] || DIRTY="$(git -C "$REPO" status --porcelain -- src templates static migrations Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ' (with uncommitted changes)' || true)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

SUMMARY="$(cat <<EOF
# flex-checkout benchmark, $NOW

Commit $COMMIT$DIRTY. Machine: $NPROC cores ($CPU), $MEM_TOTAL RAM, $(uname -sr).
Other processes used about $OTHER_CPU_PCT% of the machine's CPU time during the measurements (other work skews absolute numbers; the ratios less so).
Tools: $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2), $("$NGINX" -v 2>&1 | sed 's/.*: //'), sqlite3 $(sqlite3 --version | cut -d' ' -f1), bench/loadgen.

## Page: GET /pay/c/<id> vs nginx serving the same bytes (wrk)

wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_DURATION}s --latency, after a ${WARMUP}s warm-up, $WRK_ROUNDS round(s) each, alternating; means over rounds.
Response bytes (headers+body): ours $OURS_RESP_BYTES, nginx $NGINX_RESP_BYTES.

| server | requests/s | p50 ms | p99 ms |
| --- | ---: | ---: | ---: |
| flex-checkout | $(printf '%.0f' "$OURS_RPS") | $OURS_P50 | $OURS_P99 |
| nginx (static file) | $(printf '%.0f' "$NGINX_RPS") | $NGINX_P50 | $NGINX_P99 |
| ratio ours/nginx | $RPS_RATIO | | |

Rounds (name round req/s p50 p99):
$(sed 's/^/    /' "$TMP/wrk.tsv")

## Page at a fixed $RATE requests/s (bench/loadgen, open loop, ${RATE_DURATION}s after ${WARMUP}s warm-up)

| server | sent | 2xx | failed+non-2xx | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | max in flight |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| flex-checkout, one page | $R_N | $R_OK | $R_FAIL | $(kv "$RATE_OURS" p50_ms) | $(kv "$RATE_OURS" p90_ms) | $R_P99 | $(kv "$RATE_OURS" p999_ms) | $(kv "$RATE_OURS" max_ms) | $(kv "$RATE_OURS" max_in_flight) |
| flex-checkout, each request another session | $(kv "$RATE_FIRST" requests) | $(kv "$RATE_FIRST" ok) | $F_FAIL | $(kv "$RATE_FIRST" p50_ms) | $(kv "$RATE_FIRST" p90_ms) | $F_P99 | $(kv "$RATE_FIRST" p999_ms) | $(kv "$RATE_FIRST" max_ms) | $(kv "$RATE_FIRST" max_in_flight) |
| nginx | $(kv "$RATE_NGINX" requests) | $(kv "$RATE_NGINX" ok) | $(($(kv "$RATE_NGINX" failed) + $(kv "$RATE_NGINX" non_2xx))) | $(kv "$RATE_NGINX" p50_ms) | $(kv "$RATE_NGINX" p90_ms) | $(kv "$RATE_NGINX" p99_ms) | $(kv "$RATE_NGINX" p999_ms) | $(kv "$RATE_NGINX" max_ms) | $(kv "$RATE_NGINX" max_in_flight) |

Rows "one page" and nginx ask for the same page every time. The middle row asks for $FIRST_URLS different sessions in turn (those the POSTs below created; this ran after them), so a session comes back only every $((FIRST_URLS / RATE)) s: the cost of a page's first view.
Generator lateness (send time minus due time), p99: ours $(kv "$RATE_OURS" send_lag_p99_ms) ms, other sessions $(kv "$RATE_FIRST" send_lag_p99_ms) ms, nginx $(kv "$RATE_NGINX" send_lag_p99_ms) ms (included in the latencies).

## Checkout sessions created per second

| writer | sessions | seconds | sessions/s | p50 ms | p99 ms |
| --- | ---: | ---: | ---: | ---: | ---: |
| API: POST /v1/checkout/sessions, $POST_CONCURRENCY concurrent | $(kv "$POST_OUT" ok) | $POST_DURATION | $API_RPS | $(kv "$POST_OUT" p50_ms) | $(kv "$POST_OUT" p99_ms) |
| sqlite3 INSERT loop, same rows, 1 transaction per session | $REF_ROWS | $REF_SECS | $REF_RPS | | |
| ratio API/INSERT loop | | | $POST_RATIO | | |

Rows the POSTs wrote (warm-up included): $API_WRITES. The INSERT loop copies every session in the
database (seed and warm-up included) into scratch copies of: $REF_WHAT.

## Memory and page weight

Server RSS: $(mb "$RSS_START_KB") MiB at start, $(mb "$RSS_AFTER_WRK_KB") after wrk, $(mb "$RSS_AFTER_RATE_KB") after the fixed rate, $(mb "$RSS_AFTER_POST_KB") after the POSTs, $(mb "$RSS_AFTER_FIRST_KB") after the first views; peak (VmHWM) $(mb "$HWM_KB") MiB.

| file | bytes | gzip -9 bytes |
| --- | ---: | ---: |
| page HTML | $HTML_BYTES | $HTML_GZ |
| $CSS_URL | $CSS_BYTES | $CSS_GZ |
| ${JS_URL:-(no script linked)} | $JS_BYTES | $JS_GZ |
| total | $TOTAL_BYTES | $TOTAL_GZ |
${OTHER_ASSETS:+
Other /static files linked: $OTHER_ASSETS}

## Targets

| target | measured | result |
| --- | --- | --- |
| page >= 0.5 x nginx requests/s | $RPS_RATIO | $T_RATIO |
| p99 < 5 ms at $RATE req/s, one page | $R_P99 ms ($R_OK/$((RATE * RATE_DURATION)) 2xx) | $T_P99 |
| p99 < 5 ms at $RATE req/s, each request another session | $F_P99 ms ($F_OK/$((RATE * RATE_DURATION)) 2xx) | $T_F99 |
| HTML+CSS+JS < 30 KB (30,000 bytes) | $TOTAL_BYTES bytes | $T_SIZE |
| server memory < 64 MiB | $(mb "$HWM_KB") MiB peak RSS | $T_MEM |
EOF
)"

mkdir -p "$REPO/bench/out"
OUT="$REPO/bench/out/results-$(date +%Y-%m-%d-%H%M%S).md"
printf '%s\n' "$SUMMARY" >"$OUT"
printf '\n%s\n\nwritten to %s\n' "$SUMMARY" "$OUT"
