#!/usr/bin/env bash
# The test command: sets up everything the suite needs (headless Chromium with chromedriver, a
# throw-away PostgreSQL cluster) and runs the whole suite twice, on SQLite and on PostgreSQL.
#
# Usage: scripts/test.sh [extra cargo test arguments, e.g. a test name filter]
#
# With CI=true any missing part is a failure. By hand, a part that cannot be set up is reported
# and its tests are skipped (browser tests print a notice; the PostgreSQL run is left out).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ci=false
case "${CI:-}" in true | 1 | yes) ci=true ;; esac

log() { printf '\n==> %s\n' "$*" >&2; }

# A part that is missing: fatal in CI, a notice by hand.
missing() {
    if $ci; then
        printf 'error: %s (CI=true: every part of the test setup is required)\n' "$*" >&2
        exit 1
    fi
    printf 'warning: %s; the tests that need it will be skipped\n' "$*" >&2
}

# ---------------------------------------------------------------------------------------------
# Installing what is missing (Debian packages only).

pg_bin_dir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

need_packages=()
command -v chromium >/dev/null 2>&1 || need_packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_packages+=(chromium-driver)
pg_bin_dir >/dev/null || need_packages+=(postgresql)

if ((${#need_packages[@]} > 0)); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${need_packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # A failed install is judged below, per part, like any other missing part.
        apt-get update -qq || true
        apt-get install -y -qq --no-install-recommends "${need_packages[@]}" || true
    else
        printf 'note: cannot install %s (needs root and apt-get)\n' "${need_packages[*]}" >&2
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not on PATH; install a Rust toolchain (rust-version in Cargo.toml)" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
# Processes we start, cleaned up on every way out.

scratch=$(mktemp -d -t flex-checkout-test.XXXXXX)
chmod 755 "$scratch"
chromedriver_pid=""
localstripe_pid=""
suite_pid=""
pg_dir=""
pg_ctl=""

as_pg_user() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Signals a process and everything it started (cargo, the test binaries, the browsers), using
# /proc so that no extra tools are needed.
kill_tree() {
    local pid=$1 child
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        kill_tree "$child"
    done
    kill "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $suite_pid ]]; then
        kill_tree "$suite_pid"
        wait "$suite_pid" 2>/dev/null || true
    fi
    if [[ -n $chromedriver_pid ]]; then
        # Chromium outlives a killed chromedriver, so its browsers go first.
        kill_tree "$chromedriver_pid"
        wait "$chromedriver_pid" 2>/dev/null || true
    fi
    if [[ -n ${localstripe_pid:-} ]]; then
        kill_tree "$localstripe_pid"
        wait "$localstripe_pid" 2>/dev/null || true
    fi
    if [[ -n $pg_dir && -f $pg_dir/data/postmaster.pid ]]; then
        as_pg_user "$pg_ctl" stop -D "$pg_dir/data" -m immediate -s >/dev/null 2>&1 || true
    fi
    rm -rf "$scratch"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A loopback port nobody listens on. The OS picks it when python3 is there; otherwise a random
# port that refuses connections. Either way the caller retries if it was taken in between.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            printf '%s\n' "$p"
            return
        fi
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to $3 seconds for process $1 to listen on port $2; fails if it dies or the time runs out.
wait_for_port() {
    local pid=$1 port=$2 deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
        port_open "$port" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# chromedriver + headless Chromium.

start_chromedriver() {
    local chrome_bin=${CHROME_BIN:-$(command -v chromium || true)}
    if [[ -z $chrome_bin || ! -x $chrome_bin ]]; then
        missing "chromium is not installed"
        return
    fi
    if ! command -v chromedriver >/dev/null 2>&1; then
        missing "chromedriver is not installed"
        return
    fi
    local attempt port
    for attempt in 1 2 3; do
        port=$(free_port)
        chromedriver --port="$port" --allowed-ips=127.0.0.1 --log-level=WARNING >"$scratch/chromedriver.log" 2>&1 &
        chromedriver_pid=$!
        if wait_for_port "$chromedriver_pid" "$port" 20; then
            export WEBDRIVER_URL="http://127.0.0.1:$port"
            export CHROME_BIN="$chrome_bin"
            log "chromedriver $(chromedriver --version | awk '{print $2}') on $WEBDRIVER_URL, browser $CHROME_BIN"
            return
        fi
        kill "$chromedriver_pid" 2>/dev/null || true
        wait "$chromedriver_pid" 2>/dev/null || true
        chromedriver_pid=""
        echo "chromedriver did not come up (attempt $attempt):" >&2
        cat "$scratch/chromedriver.log" >&2 || true
    done
    missing "chromedriver does not start"
}

# ---------------------------------------------------------------------------------------------
# A throw-away PostgreSQL cluster: trust auth, loopback only, no durability (it dies with us).

start_postgres() {
    local bin
    if ! bin=$(pg_bin_dir); then
        missing "PostgreSQL (initdb, pg_ctl) is not installed"
        return
    fi
    if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
        # PostgreSQL refuses to run as root; the Debian package normally creates this user.
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    pg_ctl="$bin/pg_ctl"
    pg_dir="$scratch/pg"
    mkdir -p "$pg_dir"
    if [[ $(id -u) == 0 ]]; then chown postgres: "$pg_dir"; fi
    if ! as_pg_user "$bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
        --no-sync >"$pg_dir/initdb.log" 2>&1; then
        cat "$pg_dir/initdb.log" >&2
        missing "initdb failed"
        pg_dir=""
        return
    fi
    local attempt port
    for attempt in 1 2 3; do
        port=$(free_port)
        # Tests create a database each and keep up to 8 connections per app server.
        if as_pg_user "$pg_ctl" start -D "$pg_dir/data" -w -t 60 -s -l "$pg_dir/server.log" \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$pg_dir' \
                -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"; then
            export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
            log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
            return
        fi
        echo "PostgreSQL did not start on port $port (attempt $attempt):" >&2
        tail -n 20 "$pg_dir/server.log" >&2 || true
    done
    missing "PostgreSQL does not start"
    pg_dir=""
}

# ---------------------------------------------------------------------------------------------
# localstripe (PyPI), a stateful fake Stripe server with its own fake Stripe.js, on loopback.

start_localstripe() {
    if ! command -v python3 >/dev/null 2>&1; then
        missing "python3 is not installed (needed for localstripe)"
        return
    fi
    local venv="$scratch/localstripe-venv"
    if ! python3 -m venv "$venv" >"$scratch/localstripe-install.log" 2>&1 ||
        ! "$venv/bin/pip" install --quiet --disable-pip-version-check localstripe >>"$scratch/localstripe-install.log" 2>&1; then
        cat "$scratch/localstripe-install.log" >&2
        missing "localstripe could not be installed from PyPI"
        return
    fi
    local attempt port
    for attempt in 1 2 3; do
        port=$(free_port)
        "$venv/bin/localstripe" --port "$port" --from-scratch >"$scratch/localstripe.log" 2>&1 &
        localstripe_pid=$!
        if wait_for_port "$localstripe_pid" "$port" 30; then
            export LOCALSTRIPE_URL="http://127.0.0.1:$port"
            log "localstripe $("$venv/bin/pip" show localstripe 2>/dev/null | awk '/^Version/ {print $2}') on $LOCALSTRIPE_URL"
            return
        fi
        kill "$localstripe_pid" 2>/dev/null || true
        wait "$localstripe_pid" 2>/dev/null || true
        localstripe_pid=""
        echo "localstripe did not come up (attempt $attempt):" >&2
        cat "$scratch/localstripe.log" >&2 || true
    done
    missing "localstripe does not start"
}

# The official Standard Webhooks library (PyPI), which verifies our webhook deliveries in the tests.

install_standardwebhooks() {
    if ! command -v python3 >/dev/null 2>&1; then
        missing "python3 is not installed (needed for the standardwebhooks verifier)"
        return
    fi
    local venv="$scratch/standardwebhooks-venv"
    if ! python3 -m venv "$venv" >"$scratch/standardwebhooks-install.log" 2>&1 ||
        ! "$venv/bin/pip" install --quiet --disable-pip-version-check standardwebhooks \
            >>"$scratch/standardwebhooks-install.log" 2>&1; then
        cat "$scratch/standardwebhooks-install.log" >&2
        missing "standardwebhooks could not be installed from PyPI"
        return
    fi
    export STANDARDWEBHOOKS_PYTHON="$venv/bin/python"
    log "standardwebhooks $("$venv/bin/pip" show standardwebhooks 2>/dev/null | awk '/^Version/ {print $2}') for verifying deliveries"
}

# ---------------------------------------------------------------------------------------------

unset TEST_POSTGRES_URL WEBDRIVER_URL LOCALSTRIPE_URL STANDARDWEBHOOKS_PYTHON
start_chromedriver
start_postgres
start_localstripe
install_standardwebhooks

log "building the tests"
cargo test --all-targets --no-run --quiet "$@"

declare -A results=()
failed=false

# Runs the suite once; prints cargo's own output and keeps a log for the tally at the end.
run_suite() {
    local name=$1
    shift
    log "running the suite on $name"
    local start=$SECONDS status=0
    # In the background so that a signal reaches our trap at once instead of after the run.
    { "$@" cargo test --all-targets --no-fail-fast "${cargo_args[@]}" 2>&1 | tee "$scratch/$name.log"; } &
    suite_pid=$!
    wait "$suite_pid" || status=$?
    suite_pid=""
    local elapsed=$((SECONDS - start))
    local passed failed_n ignored
    passed=0 failed_n=0 ignored=0
    while read -r p f i; do
        passed=$((passed + p)) failed_n=$((failed_n + f)) ignored=$((ignored + i))
    done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored;.*/\1 \2 \3/p' \
        "$scratch/$name.log")
    results[$name]="$passed passed, $failed_n failed, $ignored ignored in ${elapsed}s (exit $status)"
    if ((status != 0)); then failed=true; fi
}

cargo_args=("$@")
run_suite SQLite env -u TEST_POSTGRES_URL
if [[ -n ${TEST_POSTGRES_URL:-} ]]; then
    run_suite PostgreSQL env
else
    results[PostgreSQL]="not run (no PostgreSQL)"
fi

# The API under schemathesis against our OpenAPI document (only on a full run, not a filtered one).
if ((${#cargo_args[@]} == 0)); then
    log "fuzzing the API with schemathesis (scripts/fuzz_api.sh)"
    fuzz_start=$SECONDS
    # The server binary `cargo test` just built is used as it is: a `cargo build` here would build the
    # dependencies again without the test-only features, and the next `cargo test` once more.
    if FUZZ_SKIP_BUILD=1 bash scripts/fuzz_api.sh >"$scratch/fuzz.log" 2>&1; then
        results[fuzz]="passed in $((SECONDS - fuzz_start))s"
    else
        tail -n 60 "$scratch/fuzz.log" >&2
        results[fuzz]="FAILED in $((SECONDS - fuzz_start))s"
        failed=true
    fi
else
    results[fuzz]="not run (filtered run)"
fi

log "summary"
for name in SQLite PostgreSQL fuzz; do
    printf '  %-11s %s\n' "$name:" "${results[$name]}"
done
if [[ -z ${WEBDRIVER_URL:-} ]]; then
    echo "  browser tests were skipped: no chromedriver" >&2
fi

if $failed; then
    echo "FAILED" >&2
    exit 1
fi
echo "ok"
