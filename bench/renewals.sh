#!/usr/bin/env bash
# The renewal benchmark (see BENCHMARKS.md, "Renewals", for the method and the last numbers).
#
#   bash bench/renewals.sh
#
# Builds bench/renewals.rs (the `renewal_bench` example, release; honours CARGO_TARGET_DIR), starts a
# throw-away PostgreSQL cluster in a temp dir, and renews 1,000, 10,000 and 100,000 due
# subscriptions with the sandbox gateway on SQLite and on PostgreSQL: renewals per second, next to
# the same row writes as plain statements (the ratio) and as multi-row statements, measured in the
# same run. Every case checks that each subscription was renewed and paid exactly once. Prints a
# table and writes it to bench/out/renewals-<date>.md. PostgreSQL listens on 127.0.0.1 only; it and
# the temp dir are removed on exit.
#
# Knobs (environment): SIZES (1000,10000,100000) ENDPOINTS (0: webhook endpoints of the merchant,
# subscribed to every event) DATABASES (sqlite,postgres) PG_DURABLE (0: the test cluster's settings,
# fsync=off and synchronous_commit=off, as scripts/test.sh; 1: PostgreSQL's durable defaults)
# SKIP_BUILD=1 (use the built example).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZES="${SIZES:-1000,10000,100000}"
ENDPOINTS="${ENDPOINTS:-0}"
DATABASES="${DATABASES:-sqlite,postgres}"
PG_DURABLE="${PG_DURABLE:-0}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
[[ "$SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "bench: SIZES must be numbers separated by commas" >&2; exit 2; }
[[ "$ENDPOINTS" =~ ^[0-9]+$ ]] || { echo "bench: ENDPOINTS must be a whole number" >&2; exit 2; }

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/flex-renewals.XXXXXX")"
chmod 755 "$TMP"
PG_CTL=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $PG_CTL && -f $TMP/pg/data/postmaster.pid ]]; then
        as_pg_user "$PG_CTL" stop -D "$TMP/pg/data" -m immediate -s >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_pg_user() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

command -v cargo >/dev/null || die "cargo is needed (https://rustup.rs)"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building the renewal benchmark (release, target dir $TARGET_DIR)"
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet --example renewal_bench)
fi
BIN="$TARGET_DIR/release/examples/renewal_bench"
[[ -x "$BIN" ]] || die "missing $BIN"

args=(--sizes "$SIZES" --endpoints "$ENDPOINTS")
[[ ",$DATABASES," == *,sqlite,* ]] && args+=(--sqlite)

if [[ ",$DATABASES," == *,postgres,* ]]; then
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -n 1)"
    if [[ -z $PG_BIN || ! -x $PG_BIN/initdb ]]; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            log "installing postgresql"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
            PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V -r | head -n 1)"
        else
            die "PostgreSQL (initdb, pg_ctl) is not installed"
        fi
    fi
    if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    PG_CTL="$PG_BIN/pg_ctl"
    mkdir -p "$TMP/pg"
    [[ $(id -u) != 0 ]] || chown postgres: "$TMP/pg"
    as_pg_user "$PG_BIN/initdb" -D "$TMP/pg/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
        --no-sync >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    settings="-c listen_addresses=127.0.0.1 -c unix_socket_directories='$TMP/pg' -c max_connections=100"
    if [[ $PG_DURABLE != 1 ]]; then
        settings+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    started=false
    for _ in 1 2 3; do
        PG_PORT=$((20000 + RANDOM % 40000))
        if as_pg_user "$PG_CTL" start -D "$TMP/pg/data" -w -t 60 -s -l "$TMP/pg/server.log" \
            -o "$settings -p $PG_PORT"; then
            started=true
            break
        fi
    done
    $started || { tail -n 20 "$TMP/pg/server.log" >&2; die "PostgreSQL does not start"; }
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($([[ $PG_DURABLE == 1 ]] && echo durable || echo 'fsync=off, synchronous_commit=off'))"
    args+=(--postgres "postgres://postgres@127.0.0.1:$PG_PORT/postgres")
fi

log "renewing $SIZES due subscriptions on $DATABASES"
"$BIN" "${args[@]}" | tee "$TMP/table.md"

mkdir -p "$REPO/bench/out"
OUT="$REPO/bench/out/renewals-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "# Renewals, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (with local changes)'); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "SIZES=$SIZES ENDPOINTS=$ENDPOINTS DATABASES=$DATABASES PG_DURABLE=$PG_DURABLE"
    cat "$TMP/table.md"
} >"$OUT"
log "written to $OUT"
