-- Foundation: merchants, API keys, catalog, customers, checkout sessions, payments, first
-- subscriptions and invoices, the event outbox and idempotency records.
-- Times are BIGINT microseconds since the Unix epoch (UTC); flags are BIGINT 0/1; money is BIGINT
-- minor units; JSON documents are TEXT. The same DDL runs on SQLite and PostgreSQL.

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE merchants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    name TEXT NOT NULL,
    livemode BIGINT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    redacted TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

CREATE TABLE products (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    visit_type TEXT,
    active BIGINT NOT NULL,
    upc_code TEXT,
    gtin TEXT,
    hsa_fsa_eligibility TEXT NOT NULL,
    url TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX products_owner ON products (merchant_id, livemode, id);

CREATE TABLE prices (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    product_id TEXT NOT NULL REFERENCES products (id),
    description TEXT,
    unit_amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    recurring_interval TEXT,
    recurring_interval_count BIGINT,
    trial_period_days BIGINT,
    active BIGINT NOT NULL,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX prices_owner ON prices (merchant_id, livemode, id);
CREATE INDEX prices_product ON prices (product_id);

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    external_id TEXT,
    email TEXT,
    first_name TEXT,
    last_name TEXT,
    phone TEXT,
    shipping TEXT,
    metadata TEXT,
    test_clock TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX customers_owner ON customers (merchant_id, livemode, id);
CREATE UNIQUE INDEX customers_external_id ON customers (merchant_id, livemode, external_id);
CREATE INDEX customers_email ON customers (merchant_id, livemode, email);

CREATE TABLE checkout_sessions (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_subtotal BIGINT NOT NULL,
    amount_total BIGINT NOT NULL,
    success_url TEXT NOT NULL,
    cancel_url TEXT NOT NULL,
    customer_id TEXT REFERENCES customers (id),
    customer_email TEXT,
    defaults TEXT NOT NULL,
    client_reference_id TEXT,
    metadata TEXT,
    allow_promotion_codes BIGINT NOT NULL,
    shipping_address_collection BIGINT NOT NULL,
    capture_method TEXT NOT NULL,
    setup_future_use TEXT,
    subscription_data TEXT,
    hsa_fsa_eligible BIGINT NOT NULL,
    lmn_required BIGINT NOT NULL,
    visit_type TEXT,
    payment_intent_id TEXT,
    setup_intent TEXT,
    subscription_id TEXT,
    invoice_id TEXT,
    shipping_details TEXT,
    consultation_id TEXT,
    decline_count BIGINT NOT NULL DEFAULT 0,
    -- The attempt that currently holds the right to charge this session, and since when.
    processing_attempt_id TEXT,
    processing_since BIGINT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    expired_at BIGINT,
    -- The line items: an immutable JSON snapshot of the prices and products at creation.
    line_items TEXT NOT NULL
);
CREATE INDEX checkout_sessions_owner ON checkout_sessions (merchant_id, livemode, id);
CREATE INDEX checkout_sessions_open_expiry ON checkout_sessions (status, expires_at);

CREATE TABLE consultations (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    customer_id TEXT REFERENCES customers (id),
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    visit_type TEXT NOT NULL,
    answers TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX consultations_session ON consultations (session_id);

CREATE TABLE payment_methods (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    brand TEXT NOT NULL,
    last4 TEXT NOT NULL,
    exp_month BIGINT NOT NULL,
    exp_year BIGINT NOT NULL,
    funding TEXT NOT NULL,
    country TEXT,
    billing_details TEXT NOT NULL,
    off_session BIGINT NOT NULL,
    gateway TEXT NOT NULL,
    gateway_ref TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX payment_methods_customer ON payment_methods (customer_id, id);

-- One row per try to pay a session (or, later, an invoice). Written before the gateway is called;
-- its id is the gateway idempotency key, so a retry of the same attempt can never charge twice.
CREATE TABLE payment_attempts (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    session_id TEXT REFERENCES checkout_sessions (id),
    status TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    contact TEXT NOT NULL,
    card_brand TEXT,
    card_last4 TEXT,
    card_exp_month BIGINT,
    card_exp_year BIGINT,
    card_funding TEXT,
    gateway TEXT NOT NULL,
    gateway_ref TEXT,
    decline_code TEXT,
    failure_message TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX payment_attempts_session ON payment_attempts (session_id, id);
CREATE INDEX payment_attempts_status ON payment_attempts (status, updated_at);

CREATE TABLE payment_intents (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    amount_received BIGINT NOT NULL,
    amount_refunded BIGINT NOT NULL DEFAULT 0,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    capture_method TEXT NOT NULL,
    customer_id TEXT REFERENCES customers (id),
    invoice_id TEXT,
    checkout_session_id TEXT REFERENCES checkout_sessions (id),
    payment_method_id TEXT,
    attempt_id TEXT,
    last_payment_error TEXT,
    gateway TEXT NOT NULL,
    gateway_ref TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX payment_intents_owner ON payment_intents (merchant_id, livemode, id);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    plan_id TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    billing_cadence TEXT NOT NULL,
    billing_period TEXT NOT NULL,
    billing_period_count BIGINT NOT NULL,
    billing_cycle TEXT NOT NULL,
    billing_anchor BIGINT NOT NULL,
    customer_timezone TEXT NOT NULL,
    start_date BIGINT NOT NULL,
    end_date BIGINT,
    current_period_start BIGINT NOT NULL,
    current_period_end BIGINT NOT NULL,
    trial_start BIGINT,
    trial_end BIGINT,
    cancel_at BIGINT,
    canceled_at BIGINT,
    cancel_at_period_end BIGINT NOT NULL DEFAULT 0,
    collection_method TEXT NOT NULL,
    default_payment_method TEXT,
    latest_invoice TEXT,
    checkout_session_id TEXT,
    lookup_key TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_owner ON subscriptions (merchant_id, livemode, id);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id);

CREATE TABLE subscription_items (
    id TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    position BIGINT NOT NULL,
    price_id TEXT NOT NULL REFERENCES prices (id),
    quantity BIGINT NOT NULL,
    unit_amount BIGINT NOT NULL,
    description TEXT NOT NULL
);
CREATE INDEX subscription_items_subscription ON subscription_items (subscription_id, position);

CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    number TEXT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    subscription_id TEXT REFERENCES subscriptions (id),
    status TEXT NOT NULL,
    amount_due BIGINT NOT NULL,
    amount_paid BIGINT NOT NULL,
    amount_remaining BIGINT NOT NULL,
    currency TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    due_date BIGINT,
    attempt_count BIGINT NOT NULL DEFAULT 0,
    next_payment_attempt BIGINT,
    payment_intent_id TEXT,
    billing_reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX invoices_owner ON invoices (merchant_id, livemode, id);
CREATE UNIQUE INDEX invoices_number ON invoices (merchant_id, livemode, number);

CREATE TABLE invoice_lines (
    id TEXT PRIMARY KEY,
    invoice_id TEXT NOT NULL REFERENCES invoices (id),
    position BIGINT NOT NULL,
    description TEXT NOT NULL,
    price_id TEXT,
    quantity BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    proration BIGINT NOT NULL
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, position);

-- The outbox: written in the same transaction as the change it reports.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_owner ON events (merchant_id, livemode, id);

CREATE TABLE idempotency_keys (
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code BIGINT,
    response_body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, livemode, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- The sandbox gateway's own ledger: what a real processor would remember, keyed by our idempotency
-- key, so a replayed request gets the first answer and a reconciler can read what happened.
CREATE TABLE sandbox_charges (
    idempotency_key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decline_code TEXT,
    created_at BIGINT NOT NULL
);
