#!/usr/bin/env bash
# Fuzzes the merchant API with schemathesis against our own OpenAPI document (QUALITY.md, "Bad
# input"): no 5xx, responses that match the document (status, content type, body schema), and every
# 4xx in the error envelope {"error": {"type", "code", "message", "param"}}.
#
# It builds the server, starts it on a free loopback port with a throw-away database (SQLite, or
# PostgreSQL with FUZZ_DB=postgres), makes a merchant and a test key with the CLI, seeds two
# webhook endpoints, a product, prices, a customer, a paid subscription session (hence a
# subscription, an invoice, a payment intent and a saved card) and an open session so that ids
# exist, and runs schemathesis with a fixed seed and a fixed number of examples per operation.
# Besides schemathesis's verdict, a panic or an internal error in the server log, or a dropped
# connection, fails the run.
# Exit status: 0 when nothing failed.
#
#   scripts/fuzz_api.sh                       # about a minute (most of it installing schemathesis)
#   FUZZ_DB=postgres scripts/fuzz_api.sh      # the same against PostgreSQL
#   FUZZ_MAX_EXAMPLES=200 FUZZ_SEED=7 scripts/fuzz_api.sh
#   FUZZ_VENV=.venv/schemathesis scripts/fuzz_api.sh   # reuse a venv between runs (.venv is git-ignored)
#   scripts/fuzz_api.sh --include-operation-id createCheckoutSession   # extra args go to `st run`
#
# Environment: CARGO_TARGET_DIR (honoured), FUZZ_MAX_EXAMPLES (default 50), FUZZ_SEED (default
# 20240426), FUZZ_WORKERS (default 1), FUZZ_PYTHON (the interpreter for the venv, default python3),
# FUZZ_VENV (default: a venv in the temp dir), FUZZ_SCHEMATHESIS (pip requirement, default
# schemathesis==4.32.5), FUZZ_SKIP_BUILD=1, FUZZ_KEEP=1 (keep the temp dir: server log, database,
# JUnit report), FUZZ_DB=sqlite|postgres (default sqlite; postgres starts a throw-away cluster with
# initdb/pg_ctl as scripts/test.sh does), FUZZ_DATABASE_URL (an existing database to use instead;
# a new merchant is made in it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC="$ROOT/openapi/openapi.json"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/debug/flex-checkout"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-50}"
SEED="${FUZZ_SEED:-20240426}"
# One worker: Python 3.11's ast module is not thread-safe and schemathesis parses lambdas while it
# generates ("AST constructor recursion depth mismatch"); one worker is also reproducible.
WORKERS="${FUZZ_WORKERS:-1}"
PYTHON="${FUZZ_PYTHON:-python3}"
SCHEMATHESIS_REQ="${FUZZ_SCHEMATHESIS:-schemathesis==4.32.5}"

FUZZ_DB="${FUZZ_DB:-sqlite}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-api.XXXXXX")"
chmod 755 "$WORK"
VENV="${FUZZ_VENV:-$WORK/venv}"
SERVER_PID=""
CHILD_PID=""
PG_CTL=""
STARTED_AT=$(date +%s)

log() { printf '==> %s\n' "$*" >&2; }

# Runs a long command in the background and waits for it, so that INT/TERM reach the traps at once
# (bash runs a trap only after a foreground command ends); its exit status is returned.
run() {
    "$@" &
    CHILD_PID=$!
    local status=0
    wait "$CHILD_PID" || status=$?
    CHILD_PID=""
    return "$status"
}

# PostgreSQL refuses to run as root.
as_pg_user() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A throw-away cluster in the temp dir: trust auth, loopback only, no durability. Sets DB_URL.
start_postgres() {
    local bin="" d port
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then bin="$d"; break; fi
    done
    [[ -n "$bin" ]] || { echo "FUZZ_DB=postgres needs initdb and pg_ctl (Debian package postgresql)" >&2; return 1; }
    if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
        echo "running as root needs a \`postgres\` user for PostgreSQL" >&2
        return 1
    fi
    mkdir -p "$WORK/pg"
    if [[ $(id -u) == 0 ]]; then chown postgres: "$WORK/pg"; fi
    as_pg_user "$bin/initdb" -D "$WORK/pg/data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync \
        >"$WORK/pg/initdb.log" 2>&1 || { cat "$WORK/pg/initdb.log" >&2; return 1; }
    port="$(free_port)"
    PG_CTL="$bin/pg_ctl"
    as_pg_user "$PG_CTL" start -D "$WORK/pg/data" -w -t 60 -s -l "$WORK/pg/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$WORK/pg' -c fsync=off" \
        || { cat "$WORK/pg/server.log" >&2; return 1; }
    DB_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD_PID" ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$PG_CTL" && -f "$WORK/pg/data/postmaster.pid" ]]; then
        as_pg_user "$PG_CTL" stop -D "$WORK/pg/data" -m immediate -s >/dev/null 2>&1 || true
    fi
    if [[ "${FUZZ_KEEP:-0}" == 1 ]]; then
        log "kept $WORK (server.log, f.db, report/)"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v "$PYTHON" >/dev/null || { echo "$PYTHON is required" >&2; exit 2; }
[[ -f "$SPEC" ]] || { echo "no OpenAPI document at $SPEC" >&2; exit 2; }

# --- schemathesis ------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/st" ]] || ! "$VENV/bin/python" - "$SCHEMATHESIS_REQ" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
name, _, want = sys.argv[1].partition("==")
sys.exit(0 if not want or version(name) == want else 1)
PY
    log "installing $SCHEMATHESIS_REQ into $VENV"
    run "$PYTHON" -m venv "$VENV"
    run "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SCHEMATHESIS_REQ"
fi
ST_VERSION="$("$VENV/bin/st" --version | awk '{print $NF}')"

# --- server ------------------------------------------------------------------------------------
if [[ "${FUZZ_SKIP_BUILD:-0}" != 1 ]]; then
    log "building (CARGO_TARGET_DIR=$TARGET_DIR)"
    CARGO_TARGET_DIR="$TARGET_DIR" run cargo build --quiet --manifest-path "$ROOT/Cargo.toml" --bin flex-checkout
fi
[[ -x "$BIN" ]] || { echo "no server binary at $BIN" >&2; exit 2; }

PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
if [[ -n "${FUZZ_DATABASE_URL:-}" ]]; then
    DB_URL="$FUZZ_DATABASE_URL"
elif [[ "$FUZZ_DB" == postgres ]]; then
    log "starting a throw-away PostgreSQL"
    start_postgres
elif [[ "$FUZZ_DB" == sqlite ]]; then
    DB_URL="sqlite://$WORK/f.db"
else
    echo "FUZZ_DB must be sqlite or postgres" >&2
    exit 2
fi

# The CLI migrates the database; with a merchant in it the server makes no bootstrap key.
# --database-url goes after the subcommand: clap refuses it before one (args_conflicts_with_subcommands).
MERCHANT="$("$BIN" merchants create --name fuzz --database-url "$DB_URL" | tail -n 1)"
API_KEY="$("$BIN" keys create --name fuzz --merchant "$MERCHANT" --database-url "$DB_URL" | tail -n 1)"
[[ "$API_KEY" == fsk_test_* ]] || { echo "keys create did not print a test key" >&2; exit 1; }

log "starting the server on $BASE"
# Two HTTP workers are plenty for one schemathesis worker on a small machine.
RUST_LOG="${RUST_LOG:-info,sqlx=warn,actix_server=warn}" HTTP_WORKERS=2 \
    "$BIN" serve --database-url "$DB_URL" --host 127.0.0.1 --port "$PORT" --public-url "$BASE" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "the server exited" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$BASE/healthz" >/dev/null || { echo "the server did not answer /healthz" >&2; exit 1; }

# --- seed ----------------------------------------------------------------------------------------
log "seeding"
cat >"$WORK/seed.py" <<'PY'
"""Seeds objects through the API (and pays one session on the hosted page) and writes their ids."""
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

base, key, out = sys.argv[1], sys.argv[2], sys.argv[3]


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.load(res)
    except urllib.error.HTTPError as e:
        sys.exit(f"seed: {method} {path} answered {e.code}: {e.read().decode(errors='replace')}")


# Webhook endpoints first, so that the events below are delivered to them (and fail: nothing listens
# on port 9), which gives the deliveries log attempts to show. The mutable one takes the writes.
webhook = api("POST", "/v1/webhooks", {"webhook": {
    "url": "http://127.0.0.1:9/fuzz", "events": ["*"], "description": "Seeded by scripts/fuzz_api.sh"}})["webhook"]
mutable_webhook = api("POST", "/v1/webhooks", {"webhook": {
    "url": "http://127.0.0.1:9/fuzz-mutable", "events": ["invoice.paid"]}})["webhook"]
product = api("POST", "/v1/products", {"product": {
    "name": "Fuzz gym membership", "description": "Seeded by scripts/fuzz_api.sh", "visit_type": "gym",
    "hsa_fsa_eligibility": "auto_substantiation", "metadata": {"seed": "fuzz"}}})["product"]
recurring = api("POST", "/v1/prices", {"price": {
    "product": product["product_id"], "description": "Monthly", "unit_amount": 4999,
    "recurring": {"interval": "monthly"}}})["price"]
one_time = api("POST", "/v1/prices", {"price": {
    "product": product["product_id"], "description": "Joining fee", "unit_amount": 1500}})["price"]
# The update operations get their own product and price: fuzzing archives them soon, and the
# sessions made from the ones above should keep working.
mutable_product = api("POST", "/v1/products", {"product": {"name": "Fuzz target product"}})["product"]
mutable_price = api("POST", "/v1/prices", {"price": {
    "product": mutable_product["product_id"], "unit_amount": 999, "currency": "eur",
    "recurring": {"interval": "weekly", "interval_count": 2, "trial_period_days": 7}}})["price"]
customer = api("POST", "/v1/customers", {"customer": {
    "email": "fuzz@example.com", "first_name": "Fuzz", "last_name": "Seed", "phone": "+14155550123",
    "external_id": "fuzz-seed-1", "shipping": {"line1": "1 Main St", "city": "Springfield",
                                              "postal_code": "12345", "country": "us"}}})["customer"]

# A subscription session paid with the success test card on the hosted page: it makes the
# subscription, invoice, payment intent, paying customer and saved card that the GETs can find.
paid = api("POST", "/v1/checkout/sessions", {"checkout_session": {
    "mode": "subscription", "line_items": [{"price": recurring["price_id"], "quantity": 1},
                                           {"price": one_time["price_id"], "quantity": 2}],
    "success_url": "", "cancel_url": ""}})["checkout_session"]
page_url = paid["redirect_url"]
with urllib.request.urlopen(page_url, timeout=30) as res:
    html = res.read().decode()
csrf = re.search(r'name="csrf" value="([^"]+)"', html)
if not csrf:
    sys.exit("seed: no csrf field on the hosted page " + page_url)
form = urllib.parse.urlencode({
    "csrf": csrf.group(1), "email": "payer@example.com", "first_name": "Pat", "last_name": "Payer",
    "card_number": "4242 4242 4242 4242", "card_expiry": "12 / 40", "card_cvc": "123",
    "card_postal_code": "94103"}).encode()
origin = urllib.parse.urlsplit(base)
req = urllib.request.Request(page_url, data=form, method="POST", headers={
    "Content-Type": "application/x-www-form-urlencoded", "Origin": f"{origin.scheme}://{origin.netloc}"})
try:
    with urllib.request.urlopen(req, timeout=30) as res:
        res.read()
except urllib.error.HTTPError as e:
    sys.exit(f"seed: paying {page_url} answered {e.code}")
paid = api("GET", f"/v1/checkout/sessions/{paid['checkout_session_id']}")["checkout_session"]
if paid["status"] != "complete" or not paid["subscription"]:
    sys.exit(f"seed: the paid session is not complete: {json.dumps(paid)}")

open_session = api("POST", "/v1/checkout/sessions", {"checkout_session": {
    "mode": "payment", "line_items": [{"price": one_time["price_id"], "quantity": 3}],
    "customer": customer["customer_id"], "success_url": "https://shop.example/ok?s={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://shop.example/cancel", "metadata": {"order": "42"}}})["checkout_session"]

events = api("GET", "/v1/events?limit=1")["events"]
ids = {
    "product": product["product_id"],
    "price_recurring": recurring["price_id"],
    "price_one_time": one_time["price_id"],
    "product_mutable": mutable_product["product_id"],
    "price_mutable": mutable_price["price_id"],
    "customer": customer["customer_id"],
    "paying_customer": paid["customer"],
    "session_complete": paid["checkout_session_id"],
    "session_open": open_session["checkout_session_id"],
    "payment_intent": paid["payment_intent_id"],
    "subscription": paid["subscription"],
    "invoice": paid["invoice"],
    "event": events[0]["event_id"] if events else None,
    "webhook": webhook["webhook_id"],
    "webhook_mutable": mutable_webhook["webhook_id"],
}
missing = [k for k, v in ids.items() if not v]
if missing:
    sys.exit(f"seed: no id for {', '.join(missing)}: {json.dumps(paid)}")
with open(out, "w") as f:
    json.dump(ids, f, indent=2)
for k, v in ids.items():
    print(f"    {k:17} {v}")
PY
run "$PYTHON" "$WORK/seed.py" "$BASE" "$API_KEY" "$WORK/ids.json"

# The examples and coverage phases build requests from the document's examples: a copy of it with
# the example ids (the seed's) replaced by the seeded ones lets those requests find real objects.
"$PYTHON" - "$SPEC" "$WORK/ids.json" "$WORK/openapi.json" <<'PY'
import json, re, sys
spec, ids = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
for prefix, name in [("fprod_", "product_mutable"), ("fprice_", "price_mutable"), ("fcus_", "customer"),
                     ("fcs_", "session_open"), ("fpi_", "payment_intent"), ("fsub_", "subscription"),
                     ("fin_", "invoice"), ("fevt_", "event"), ("fwh_", "webhook_mutable")]:
    spec = re.sub(prefix + r"[0-9A-HJKMNP-TV-Z]{26}\b", ids[name], spec)
json.loads(spec)
open(sys.argv[3], "w").write(spec)
PY

# --- hooks: seeded ids into generated requests, and the error-envelope check ------------------
cat >"$WORK/hooks.py" <<'PY'
"""schemathesis hooks for scripts/fuzz_api.sh."""
import hashlib
import json
import os

import schemathesis
from hypothesis import strategies as st

with open(os.environ["FUZZ_IDS_FILE"]) as f:
    IDS = json.load(f)

# Path parameter name -> ids of that kind that exist. Updates only touch the *_mutable ones.
PATH_IDS = {
    "product_id": [IDS["product_mutable"], IDS["product"]],
    "price_id": [IDS["price_mutable"], IDS["price_recurring"], IDS["price_one_time"]],
    "customer_id": [IDS["customer"], IDS["paying_customer"]],
    "checkout_session_id": [IDS["session_open"], IDS["session_complete"]],
    "payment_intent_id": [IDS["payment_intent"]],
    "subscription_id": [IDS["subscription"]],
    "invoice_id": [IDS["invoice"]],
    "event_id": [IDS["event"]],
    "webhook_id": [IDS["webhook_mutable"], IDS["webhook"]],
}
QUERY_IDS = {
    "product": [IDS["product"]],
    "customer": [IDS["customer"], IDS["paying_customer"]],
    "payment_intent": [IDS["payment_intent"]],
    "object_id": [IDS["product"], IDS["session_complete"]],
    "event_id": [IDS["event"]],
}
URLS = ["", "https://shop.example/done?session={CHECKOUT_SESSION_ID}", "http://localhost:8000/back"]


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    """Generated path ids, or ids that exist, so that the 200s are exercised too."""
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    writes = context.operation is not None and context.operation.method.upper() != "GET"
    options = []
    for name, ids in PATH_IDS.items():
        if name in path_parameters:
            ids = ids[:1] if writes and name in ("product_id", "price_id", "webhook_id") else ids
            options += [{**path_parameters, name: i} for i in ids]
    return st.sampled_from(options + [path_parameters])


@schemathesis.hook
def flatmap_query(context, query):
    """Generated filters, or ids that exist; and pages with one cursor (both at once is a 400)."""
    if not isinstance(query, dict):
        return st.just(query)
    options = [query]
    for name, ids in QUERY_IDS.items():
        if name in query:
            options += [{**query, name: i} for i in ids]
    if "starting_after" in query and "ending_before" in query:
        options += [{k: v for k, v in o.items() if k != "ending_before"} for o in options]
    return st.sampled_from(options)


def real_refs(body, path, times="drop"):
    """The same body pointing at objects that exist, with the cross-field rules that a schema cannot
    state (one of price/price_data, modes and their options, ...) made to hold. The session times
    (expires_at, trial_end) are relative to now, so a generated one is nearly always out of range:
    times="drop" removes them, "keep" keeps them, "coverage" removes only the coverage phase's
    filler value 0 (so the boundary values it tests, like -2**63, still get through)."""
    if path == "/v1/events/{event_id}/retry" and isinstance(body, dict) and isinstance(body.get("webhook_id"), str):
        return {**body, "webhook_id": IDS["webhook"]}
    if not isinstance(body, dict) or len(body) != 1:
        return body
    key = next(iter(body))
    inner = body[key]
    if not isinstance(inner, dict):
        return body
    inner = dict(inner)
    if path == "/v1/prices" and "product" in inner:
        inner["product"] = IDS["product"]
    if path in ("/v1/webhooks", "/v1/webhooks/{webhook_id}"):
        # Deliveries go to a local port where nothing listens, never to generated hosts.
        if "url" in inner:
            inner["url"] = "http://127.0.0.1:9/fuzz"
        events = inner.get("events")
        if isinstance(events, list) and "*" in events and len(events) > 1:
            inner["events"] = [e for e in events if e != "*"]
    if path == "/v1/checkout/sessions":
        mode = inner.get("mode")
        for field in ("success_url", "cancel_url"):
            value = inner.get(field)
            if field in inner and not (isinstance(value, str) and value.lower().startswith("https://")):
                inner[field] = URLS[len(str(value)) % len(URLS)]
        if inner.get("customer") is not None:
            inner["customer"] = IDS["customer"]
            inner.pop("customer_email", None)
        if times == "drop" or (times == "coverage" and inner.get("expires_at") == 0):
            inner.pop("expires_at", None)
        if mode != "payment":
            inner.pop("setup_future_use", None)
            if inner.get("capture_method") == "manual":
                inner.pop("capture_method")
        if mode != "subscription":
            inner.pop("subscription_data", None)
        elif isinstance(inner.get("subscription_data"), dict):
            data = dict(inner["subscription_data"])
            if times == "coverage" and data.get("trial_end") not in (None, 0):
                data.pop("trial_period_days", None)
            if times == "drop" or data.get("trial_end") == 0 or data.get("trial_period_days") is not None:
                data.pop("trial_end", None)
            inner["subscription_data"] = data
        items = inner.get("line_items")
        if mode == "setup":
            inner.pop("line_items", None)
        elif isinstance(items, list) or mode in ("payment", "subscription"):
            fixed = []
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict):
                    continue
                item = dict(item)
                data = item.get("price_data")
                if item.get("price") is not None or not isinstance(data, dict):
                    item["price"] = IDS["price_one_time"]
                    item.pop("price_data", None)
                else:
                    item.pop("price", None)
                    data = {k: v for k, v in data.items() if k != "currency"}
                    if not isinstance(data.get("product_data"), dict):
                        data["product"] = IDS["product"]
                        data.pop("product_data", None)
                    elif "product" in data:
                        data.pop("product")
                    if mode == "payment":
                        data.pop("recurring", None)
                    item["price_data"] = data
                fixed.append(item)
            if mode == "subscription":
                first = {"price": IDS["price_recurring"]}
                if fixed and isinstance(fixed[0].get("quantity"), int):
                    first["quantity"] = fixed[0]["quantity"]
                fixed = [first] + [i for i in fixed[1:] if "price" in i][:99]
            inner["line_items"] = fixed or [{"price": IDS["price_one_time"], "quantity": 1}]
    return {key: inner}


@schemathesis.hook
def flatmap_body(context, body):
    """The generated body, or the same body pointing at objects that exist (to get past lookups)."""
    path = context.operation.path if context.operation is not None else ""
    options = [real_refs(body, path), real_refs(body, path, times="keep"), body]
    unique = [o for n, o in enumerate(options) if o not in options[:n]]
    return st.sampled_from(unique)


def valid_key(value):
    return isinstance(value, str) and 0 < len(value.strip()) and len(value) <= 255 and all(
        " " <= c <= "~" for c in value)


def positive_coverage_body(case):
    meta = case.meta
    if meta is None or str(meta.phase.name) != "coverage":
        return False
    return any(str(getattr(loc, "value", loc)) == "body" and not component.mode.is_negative
               for loc, component in meta.components.items())


@schemathesis.hook
def map_case(context, case):
    """Coverage-phase positive bodies get the same repairs as half of the fuzzed ones (the coverage
    phase sets every optional field at once, which breaks the cross-field rules every time).

    Generated Idempotency-Keys repeat across cases (the same `0` with many bodies, each a 409 that
    never reaches the handler), so a valid key gets a suffix derived from the request: the same
    request still replays, another request runs. Invalid keys are kept as generated (400)."""
    if positive_coverage_body(case):
        case.body = real_refs(case.body, case.path, times="coverage")
    for name in list(case.headers or {}):
        if name.lower() == "idempotency-key" and valid_key(case.headers[name]):
            request = json.dumps([case.method, case.path, case.path_parameters, case.body], sort_keys=True,
                                 default=repr)
            digest = hashlib.sha256(request.encode()).hexdigest()[:16]
            case.headers = {**case.headers, name: f"{case.headers[name].strip()[:200]}-{digest}"}
    return case


@schemathesis.hook
def after_call(context, case, response):
    """Notes each response's status for the per-operation table in the summary."""
    with open(os.environ["FUZZ_STATUS_FILE"], "a") as f:
        f.write(f"{case.method.upper()} {case.path} {response.status_code}\n")


@schemathesis.hook
def after_network_error(context, case, request):
    """A dropped connection (a panicking handler) is a server bug: keep the request to show it."""
    body = request.body.decode(errors="replace") if isinstance(request.body, bytes) else request.body
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "content-length")}
    with open(os.environ["FUZZ_NETWORK_ERRORS_FILE"], "a") as f:
        f.write(json.dumps({"method": request.method, "url": request.url, "headers": headers, "body": body}) + "\n")


@schemathesis.check
def no_abandoned_idempotency_key(ctx, response, case):
    """schemathesis sends a request again when the connection drops before an answer; when the
    server dropped it because the handler panicked, the second try finds the first one's
    Idempotency-Key still claimed (409 idempotency_key_in_use). Keys are unique per request here
    and requests go one at a time, so that answer means an earlier identical request never finished."""
    if response.status_code == 409 and b"idempotency_key_in_use" in response.content:
        raise AssertionError("the same request was still `in use`: the first attempt got no answer "
                             "(dropped connection; see the server log for a panic)")
    return None


@schemathesis.check
def error_envelope(ctx, response, case):
    """Every 4xx of the merchant API is JSON {"error": {"type", "code", "message", "param"}} with a
    non-empty message. (/healthz and the hosted pages are not the merchant API.)"""
    if not 400 <= response.status_code < 500 or not case.path.startswith("/v1/"):
        return None
    content_type = ",".join(response.headers.get("content-type", []))
    if not content_type.startswith("application/json"):
        raise AssertionError(f"{response.status_code} answered with Content-Type `{content_type}`, not JSON")
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{response.status_code} body is not JSON: {e}") from None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        raise AssertionError(f'{response.status_code} body is not {{"error": {{...}}}}: {body!r:.300}')
    error = body["error"]
    for field in ("type", "code", "message"):
        if not isinstance(error.get(field), str) or not error[field].strip():
            raise AssertionError(f"{response.status_code} error.{field} is missing or empty: {error!r:.300}")
    if "param" not in error or not (error["param"] is None or isinstance(error["param"], str)):
        raise AssertionError(f"{response.status_code} error.param must be a string or null: {error!r:.300}")
    return None
PY

# --- fuzz ----------------------------------------------------------------------------------------
# Reproduction commands hide only the Authorization header (by default schemathesis also hides
# every field whose name contains "session" or "key", i.e. whole checkout_session bodies).
cat >"$WORK/schemathesis.toml" <<'TOML'
[output.sanitization]
keys-to-sanitize = ["authorization"]
sensitive-markers = ["secret", "password"]
TOML
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
CHECKS="$CHECKS,error_envelope,no_abandoned_idempotency_key"
ST_ARGS=(
    run "$WORK/openapi.json"
    --url "$BASE"
    --header "Authorization: Bearer $API_KEY"
    --checks "$CHECKS"
    --phases examples,coverage,fuzzing
    --max-examples "$MAX_EXAMPLES"
    --seed "$SEED"
    --workers "$WORKERS"
    --request-timeout 10
    --generation-database none
    --suppress-health-check all
    --report junit --report-dir "$WORK/report"
    --no-color
    "$@"
)
log "schemathesis $ST_VERSION: st ${ST_ARGS[*]//$API_KEY/fsk_test_***}"
FUZZ_STARTED=$(date +%s)
ST_STATUS=0
cd "$WORK"
SCHEMATHESIS_HOOKS="$WORK/hooks.py" FUZZ_IDS_FILE="$WORK/ids.json" FUZZ_STATUS_FILE="$WORK/statuses.txt" \
    FUZZ_NETWORK_ERRORS_FILE="$WORK/network_errors.jsonl" \
    run "$VENV/bin/st" --config-file "$WORK/schemathesis.toml" "${ST_ARGS[@]}" || ST_STATUS=$?
cd "$ROOT"
FUZZ_SECONDS=$(( $(date +%s) - FUZZ_STARTED ))

# Panics and internal errors in the server log fail the run even when schemathesis saw no 5xx
# (a panicking handler drops the connection instead of answering).
SERVER_PROBLEMS=$(grep -cE 'panicked|internal error' "$WORK/server.log" || true)
if [[ "$SERVER_PROBLEMS" -gt 0 ]]; then
    echo "--- server log: panics / internal errors ---"
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/server.log" | grep -E -A1 'panicked|internal error' | head -n 40
fi
NETWORK_ERRORS=0
if [[ -s "$WORK/network_errors.jsonl" ]]; then
    NETWORK_ERRORS=$(wc -l <"$WORK/network_errors.jsonl")
fi

"$PYTHON" - "$SPEC" "$WORK/statuses.txt" "$WORK/network_errors.jsonl" <<'PY'
"""Per-operation status counts, and the requests whose connection the server dropped."""
import collections, json, os, shlex, sys

spec, statuses, dropped = sys.argv[1:4]
documented = [(m.upper(), p) for p, item in json.load(open(spec))["paths"].items() for m in item
              if m in ("get", "post", "put", "patch", "delete")]
counts = collections.defaultdict(collections.Counter)
if os.path.exists(statuses):
    for line in open(statuses):
        method, path, status = line.split()
        counts[(method, path)][status] += 1
print("\nresponses per documented operation (status:count)")
for op in documented:
    cells = " ".join(f"{s}:{n}" for s, n in sorted(counts.pop(op, {}).items()))
    print(f"  {op[0]:6} {op[1]:56} {cells or 'not called'}")
probes = collections.Counter()
for c in counts.values():
    probes.update(c)
if probes:
    print("  other methods (unsupported-method probes): "
          + " ".join(f"{s}:{n}" for s, n in sorted(probes.items())))
if os.path.exists(dropped) and os.path.getsize(dropped):
    print("\nrequests the server answered with a dropped connection (no response):")
    seen = set()
    for line in open(dropped):
        r = json.loads(line)
        key = (r["method"], r["url"], r["body"])
        if key in seen:
            continue
        seen.add(key)
        parts = ["curl", "-X", r["method"], "-H", "Authorization: Bearer $KEY"]
        for k, v in r["headers"].items():
            if k.lower() in ("content-type", "idempotency-key"):
                parts += ["-H", f"{k}: {v}"]
        if r["body"] is not None:
            parts += ["--data-raw", r["body"]]
        print("  " + " ".join(shlex.quote(p) if p != "Authorization: Bearer $KEY" else '"Authorization: Bearer $KEY"'
                              for p in parts) + " " + shlex.quote(r["url"]))
PY

echo
echo "fuzz summary"
echo "  schemathesis      $ST_VERSION (seed $SEED, $MAX_EXAMPLES examples per operation, $WORKERS worker(s))"
echo "  spec              ${SPEC#"$ROOT"/}"
echo "  server            $BASE ($BIN, database ${DB_URL%%:*})"
echo "  fuzzing           ${FUZZ_SECONDS}s (whole script $(( $(date +%s) - STARTED_AT ))s)"
echo "  schemathesis      $([[ $ST_STATUS -eq 0 ]] && echo passed || echo "FAILED (exit $ST_STATUS)")"
echo "  dropped requests  $NETWORK_ERRORS"
echo "  server log        $SERVER_PROBLEMS panic/internal-error line(s)"
if [[ $ST_STATUS -ne 0 || "$SERVER_PROBLEMS" -gt 0 || "$NETWORK_ERRORS" -gt 0 ]]; then
    echo "  result            FAILED"
    exit 1
fi
echo "  result            passed"
