#!/usr/bin/env bash
# Fuzzes the merchant API with schemathesis against our own OpenAPI document (QUALITY.md, "Bad
# input"): no 5xx, responses that match the document (status, content type, body schema), and every
# 4xx in the error envelope {"error": {"type", "code", "message", "param"}}.
#
# It builds the server, starts it on a free loopback port with a throw-away database (SQLite, or
# PostgreSQL with FUZZ_DB=postgres), makes a merchant and a test key with the CLI, seeds two
# webhook endpoints, a product, prices, a customer, a paid subscription session (hence a
# subscription, an invoice, a payment intent and a saved card), an open session, and subscriptions
# made through the API for that card (one with nearly every field, one to update, a draft to
# activate, two to cancel, two open invoices to pay and to void) and a customer whose saved card is
# always declined (with an open invoice) so that ids exist, and runs schemathesis with a fixed seed
# and a fixed number of examples per operation.
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
from datetime import datetime, timedelta, timezone

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

def pay_on_page(session, card_number, email):
    """Fills the hosted page of `session` with a test card, submits it, and answers the session."""
    page_url = session["redirect_url"]
    with urllib.request.urlopen(page_url, timeout=30) as res:
        html = res.read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    if not csrf:
        sys.exit("seed: no csrf field on the hosted page " + page_url)
    form = urllib.parse.urlencode({
        "csrf": csrf.group(1), "email": email, "first_name": "Pat", "last_name": "Payer",
        "card_number": card_number, "card_expiry": "12 / 40", "card_cvc": "123",
        "card_postal_code": "94103"}).encode()
    origin = urllib.parse.urlsplit(base)
    req = urllib.request.Request(page_url, data=form, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Origin": f"{origin.scheme}://{origin.netloc}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            res.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"seed: paying {page_url} answered {e.code}")
    return api("GET", f"/v1/checkout/sessions/{session['checkout_session_id']}")["checkout_session"]


# A subscription session paid with the success test card on the hosted page: it makes the
# subscription, invoice, payment intent, paying customer and saved card that the GETs can find.
paid = pay_on_page(api("POST", "/v1/checkout/sessions", {"checkout_session": {
    "mode": "subscription", "line_items": [{"price": recurring["price_id"], "quantity": 1},
                                           {"price": one_time["price_id"], "quantity": 2}],
    "success_url": "", "cancel_url": ""}})["checkout_session"], "4242 4242 4242 4242", "payer@example.com")
if paid["status"] != "complete" or not paid["subscription"]:
    sys.exit(f"seed: the paid session is not complete: {json.dumps(paid)}")
# A customer whose saved card is declined at every charge (test card ...0341), for the 402s.
declining = pay_on_page(api("POST", "/v1/checkout/sessions", {"checkout_session": {
    "mode": "setup", "success_url": "", "cancel_url": ""}})["checkout_session"],
    "4000 0000 0000 0341", "declined@example.com")
if declining["status"] != "complete" or not declining["customer"]:
    sys.exit(f"seed: the setup session is not complete: {json.dumps(declining)}")

open_session = api("POST", "/v1/checkout/sessions", {"checkout_session": {
    "mode": "payment", "line_items": [{"price": one_time["price_id"], "quantity": 3}],
    "customer": customer["customer_id"], "success_url": "https://shop.example/ok?s={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://shop.example/cancel", "metadata": {"order": "42"}}})["checkout_session"]

# Subscriptions made through the API (seed 002: bare bodies, bare answers), for the paying
# customer's card (and one open invoice for the declined card), on a plan product of their own with
# one recurring price (so that a product id as plan_id is not ambiguous; the fuzzed prices go to the
# product above). Each write operation gets its own targets: updates cannot undo a cancel, and an
# invoice is paid or voided once.
plan_product = api("POST", "/v1/products", {"product": {"name": "Fuzz plan"}})["product"]
plan_price = api("POST", "/v1/prices", {"price": {
    "product": plan_product["product_id"], "unit_amount": 2500, "recurring": {"interval": "monthly"}}})["price"]
start = datetime.now(timezone.utc).replace(microsecond=0)
phase_change = start + timedelta(days=90)
# Nearly every field of seed 002; SEND_INVOICE, so its first invoice stays open (for /pay). No
# commitment: the fuzzed creates try those, and a seed that fails stops the whole run.
full = api("POST", "/v1/subscriptions", {
    "customer_id": paid["customer"], "plan_id": plan_product["product_id"], "currency": "usd",
    "billing_cadence": "IN_ADVANCE", "billing_period": "MONTH", "billing_period_count": 1,
    "billing_cycle": "ANNIVERSARY", "start_date": start.isoformat(), "lookup_key": "fuzz-seed-full",
    "metadata": {"seed": "fuzz"}, "collection_method": "SEND_INVOICE", "payment_terms": "30_NET",
    "proration_behavior": "CREATE_PRORATIONS", "customer_timezone": "America/New_York",
    "parent_subscription_id": paid["subscription"], "invoice_billing": "INVOICE_TO_SELF",
    "override_line_items": [{"price_id": plan_price["price_id"], "quantity": "2"}],
    "line_items": [{"price_id": one_time["price_id"], "quantity": 1, "display_name": "Joining fee"}],
    "phases": [{"start_date": start.isoformat(), "end_date": phase_change.isoformat(),
                "override_line_items": [{"price_id": plan_price["price_id"], "amount": "20.00"}]},
               {"start_date": phase_change.isoformat()}]})
mutable = api("POST", "/v1/subscriptions", {
    "subscription": {"customer_id": paid["customer"], "plan_id": plan_price["price_id"],
                     "lookup_key": "fuzz-seed-mutable"}})
draft = api("POST", "/v1/subscriptions", {
    "customer_id": paid["customer"], "plan_id": plan_price["price_id"], "status": "DRAFT"})
to_cancel = [api("POST", "/v1/subscriptions", {"customer_id": paid["customer"], "plan_id": plan_price["price_id"]})
             for _ in range(2)]
to_void = api("POST", "/v1/subscriptions", {
    "customer_id": paid["customer"], "plan_id": plan_price["price_id"], "collection_method": "SEND_INVOICE"})
declined = api("POST", "/v1/subscriptions", {
    "customer_id": declining["customer"], "plan_id": plan_price["price_id"], "collection_method": "SEND_INVOICE"})
for name, sub, status in [("full", full, "ACTIVE"), ("mutable", mutable, "ACTIVE"), ("draft", draft, "DRAFT"),
                          ("to_void", to_void, "ACTIVE"), ("declined", declined, "ACTIVE")] + [
                             ("to_cancel", s, "ACTIVE") for s in to_cancel]:
    if sub.get("subscription_status") != status:
        sys.exit(f"seed: the {name} subscription is not {status}: {json.dumps(sub)}")
for name, sub in [("full", full), ("to_void", to_void), ("declined", declined)]:
    invoice = api("GET", f"/v1/invoices/{sub['latest_invoice']}")["invoice"]
    if invoice["status"] != "open":
        sys.exit(f"seed: the first invoice of the {name} subscription is not open: {json.dumps(invoice)}")

events = api("GET", "/v1/events?limit=1")["events"]
ids = {
    "product": product["product_id"],
    "price_recurring": recurring["price_id"],
    "price_one_time": one_time["price_id"],
    "product_mutable": mutable_product["product_id"],
    "price_mutable": mutable_price["price_id"],
    "customer": customer["customer_id"],
    "paying_customer": paid["customer"],
    "declining_customer": declining["customer"],
    "session_complete": paid["checkout_session_id"],
    "session_open": open_session["checkout_session_id"],
    "payment_intent": paid["payment_intent_id"],
    "subscription": paid["subscription"],
    "invoice": paid["invoice"],
    "plan_product": plan_product["product_id"],
    "plan_price": plan_price["price_id"],
    "subscription_full": full["id"],
    "subscription_mutable": mutable["id"],
    "subscription_draft": draft["id"],
    "subscription_cancel": to_cancel[0]["id"],
    "subscription_cancel_2": to_cancel[1]["id"],
    "invoice_payable": full["latest_invoice"],
    "invoice_voidable": to_void["latest_invoice"],
    "invoice_declining": declined["latest_invoice"],
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
    print(f"    {k:21} {v}")
PY
run "$PYTHON" "$WORK/seed.py" "$BASE" "$API_KEY" "$WORK/ids.json"

# The examples and coverage phases build requests from the document's examples: a copy of it with
# the example ids (the seed's) replaced by the seeded ones lets those requests find real objects.
# Some paths get their own: the write operations on subscriptions and invoices have their own targets.
"$PYTHON" - "$SPEC" "$WORK/ids.json" "$WORK/openapi.json" <<'PY'
import json, re, sys
spec, ids = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
GENERIC = {"fprod_": "product_mutable", "fprice_": "price_mutable", "fcus_": "customer", "fcs_": "session_open",
           "fpi_": "payment_intent", "fsub_": "subscription", "fin_": "invoice", "fevt_": "event",
           "fwh_": "webhook_mutable"}
BY_PATH = {
    "/v1/subscriptions": {"fcus_": "paying_customer", "fprice_": "plan_price"},
    "/v1/subscriptions/{subscription_id}": {"fsub_": "subscription_mutable", "fprice_": "price_recurring"},
    "/v1/subscriptions/{subscription_id}/cancel": {"fsub_": "subscription_cancel"},
    "/v1/invoices/{invoice_id}/pay": {"fin_": "invoice_payable"},
    "/v1/invoices/{invoice_id}/void": {"fin_": "invoice_voidable"},
}


def seeded(value, names):
    text = json.dumps(value)
    for prefix, name in names.items():
        text = re.sub(prefix + r"[0-9A-HJKMNP-TV-Z]{26}\b", ids[name], text)
    return json.loads(text)


# Once each: the seeded ids have the form of the example ids.
spec["paths"] = {path: seeded(item, {**GENERIC, **BY_PATH.get(path, {})}) for path, item in spec["paths"].items()}
spec["components"] = seeded(spec["components"], GENERIC)
json.dump(spec, open(sys.argv[3], "w"), indent=2)
PY

# --- hooks: seeded ids into generated requests, and the error-envelope check ------------------
cat >"$WORK/hooks.py" <<'PY'
"""schemathesis hooks for scripts/fuzz_api.sh."""
import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone

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
    "subscription_id": [IDS["subscription"], IDS["subscription_full"]],
    "invoice_id": [IDS["invoice"], IDS["invoice_payable"]],
    "event_id": [IDS["event"]],
    "webhook_id": [IDS["webhook_mutable"], IDS["webhook"]],
}
# The writes that change a subscription or an invoice for good have targets of their own (the
# seeded ones above stay as they are for the reads): an update cannot undo a cancel, an invoice is
# paid or voided once, a draft is activated once.
WRITE_PATH_IDS = {
    "/v1/subscriptions/{subscription_id}": {
        "subscription_id": [IDS["subscription_mutable"], IDS["subscription_draft"]]},
    "/v1/subscriptions/{subscription_id}/cancel": {
        "subscription_id": [IDS["subscription_cancel"], IDS["subscription_cancel_2"]]},
    "/v1/invoices/{invoice_id}/pay": {
        "invoice_id": [IDS["invoice_payable"], IDS["invoice_declining"], IDS["invoice"]]},
    "/v1/invoices/{invoice_id}/void": {"invoice_id": [IDS["invoice_voidable"]]},
}
QUERY_IDS = {
    "product": [IDS["product"]],
    "customer": [IDS["customer"], IDS["paying_customer"]],
    "customer_id": [IDS["paying_customer"], IDS["customer"]],
    "external_customer_id": ["fuzz-seed-1"],
    "subscription": [IDS["subscription"], IDS["subscription_full"]],
    "plan_id": [IDS["plan_price"], IDS["price_recurring"]],
    "lookup_key": ["fuzz-seed-full"],
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
    own = WRITE_PATH_IDS.get(context.operation.path, {}) if writes else {}
    options = []
    for name, ids in PATH_IDS.items():
        if name in path_parameters:
            ids = ids[:1] if writes and name in ("product_id", "price_id", "webhook_id") else own.get(name, ids)
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


TIME_ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
# A start this far back at most: every period since a start in the past is billed in the create
# request itself, one invoice each (a daily plan from year 2000 is ~10,000 invoices, minutes with
# the database locked; reported to the billing engine's owner). Older starts are dropped.
MAX_BACKDATE = timedelta(days=31)


def instant(value):
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def money(value):
    """A decimal string cut to what a usd amount can be (2 places, at most 99,999,999.99)."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return value
    whole, _, fraction = value.partition(".")
    whole = whole.lstrip("0")[-8:] or "0"
    return whole + ("." + fraction[:2] if fraction else "")


def subscription_create_refs(inner, times):
    """Seed 002's create body for the seeded customers, plan, prices and parent, with its
    cross-field rules made to hold (customer_id or external_customer_id naming one customer,
    overrides of prices the subscription has, each once, commitment settings with an amount,
    back-to-back phases, INVOICE_TO_PARENT with a parent)."""
    if inner.get("external_customer_id") is not None:
        inner["external_customer_id"] = "fuzz-seed-1"
        if inner.get("customer_id") is not None:
            inner["customer_id"] = IDS["customer"]
    else:
        # Mostly the card that pays; sometimes the one that is declined (402 with ERROR_IF_INCOMPLETE).
        declined = len(json.dumps(inner, sort_keys=True, default=repr)) % 5 == 0
        inner["customer_id"] = IDS["declining_customer" if declined else "paying_customer"]
    inner["plan_id"] = IDS["plan_product"] if len(str(inner.get("plan_id"))) % 4 == 0 else IDS["plan_price"]
    if inner.get("currency") is not None:
        inner["currency"] = "usd"
    if "status" in inner:
        inner.pop("subscription_status", None)
    if inner.get("customer_timezone") is not None and times != "keep":
        inner["customer_timezone"] = TIME_ZONES[len(str(inner["customer_timezone"])) % len(TIME_ZONES)]
    if inner.get("parent_subscription_id") is not None or inner.get("invoice_billing") == "INVOICE_TO_PARENT":
        inner["parent_subscription_id"] = IDS["subscription"]
    if inner.get("commitment_amount") is None and any(
            inner.get(f) not in (None, False) for f in ("commitment_duration", "overage_factor", "enable_true_up")):
        inner["commitment_amount"] = "100.00"
    if "commitment_amount" in inner:
        inner["commitment_amount"] = money(inner["commitment_amount"])
    prices = [IDS["plan_price"]]
    if isinstance(inner.get("line_items"), list):
        items = []
        for n, item in enumerate(inner["line_items"]):
            if isinstance(item, dict):
                item = {**item, "price_id": [IDS["price_one_time"], IDS["price_recurring"]][n % 2]}
                if item["price_id"] not in prices:
                    prices.append(item["price_id"])
            items.append(item)
        inner["line_items"] = items

    def overrides(value):
        """The prices the subscription has, each once (the extra overrides are dropped)."""
        if not isinstance(value, list):
            return value
        fixed = []
        for item, price in zip(value, prices):
            if isinstance(item, dict):
                item = {**item, "price_id": price}
                if "amount" in item:
                    item["amount"] = money(item["amount"])
            fixed.append(item)
        return fixed

    if "override_line_items" in inner:
        inner["override_line_items"] = overrides(inner["override_line_items"])
    now = datetime.now(timezone.utc)
    if times == "drop":
        for field in ("start_date", "end_date", "trial_start", "trial_end"):
            inner.pop(field, None)
    else:
        for first, then in (("start_date", "end_date"), ("trial_start", "trial_end")):
            a, b = instant(inner.get(first)), instant(inner.get(then))
            if a is not None and b is not None and b < a:
                inner[first], inner[then] = inner[then], inner[first]
        for field in ("start_date", "trial_start"):
            t = instant(inner.get(field))
            if t is not None and t < now - MAX_BACKDATE:
                inner.pop(field)
    if isinstance(inner.get("phases"), list) and times != "keep":
        # Back to back from the start (or an hour from now), 30 days each; the last one open
        # unless it came with an end; no end_date for the subscription to fall out of.
        phases = inner["phases"][:4]
        begin = instant(inner.get("start_date")) or now + timedelta(hours=1)
        fixed = []
        for n, phase in enumerate(phases):
            if isinstance(phase, dict):
                phase = dict(phase)
                if "override_line_items" in phase:
                    phase["override_line_items"] = overrides(phase["override_line_items"])
                phase["start_date"] = (begin + timedelta(days=30 * n)).isoformat()
                if n + 1 < len(phases) or phase.get("end_date") is not None:
                    phase["end_date"] = (begin + timedelta(days=30 * (n + 1))).isoformat()
            fixed.append(phase)
        inner["phases"] = fixed
        inner.pop("end_date", None)
    return inner


def subscription_refs(body, path, times):
    """Subscription bodies come bare (seed 002) or wrapped in {"subscription": ...}."""
    if not isinstance(body, dict):
        return body
    wrapped = set(body) == {"subscription"} and isinstance(body["subscription"], dict)
    inner = dict(body["subscription"] if wrapped else body)
    if path == "/v1/subscriptions":
        inner = subscription_create_refs(inner, times)
    elif path == "/v1/subscriptions/{subscription_id}":
        if inner.get("plan_id") is not None:
            inner["plan_id"] = [IDS["price_recurring"], IDS["plan_price"]][len(str(inner["plan_id"])) % 2]
        if "status" in inner:
            inner.pop("subscription_status", None)
        if times == "drop":
            inner.pop("trial_end", None)
            inner.pop("end_date", None)
    return {"subscription": inner} if wrapped else inner


def real_refs(body, path, times="drop"):
    """The same body pointing at objects that exist, with the cross-field rules that a schema cannot
    state (one of price/price_data, modes and their options, ...) made to hold. The session times
    (expires_at, trial_end) are relative to now, so a generated one is nearly always out of range:
    times="drop" removes them, "keep" keeps them, "coverage" removes only the coverage phase's
    filler value 0 (so the boundary values it tests, like -2**63, still get through)."""
    if path == "/v1/events/{event_id}/retry" and isinstance(body, dict) and isinstance(body.get("webhook_id"), str):
        return {**body, "webhook_id": IDS["webhook"]}
    if path.startswith("/v1/subscriptions"):
        return subscription_refs(body, path, times)
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
