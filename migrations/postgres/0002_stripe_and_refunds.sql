-- The Stripe gateway: an attempt remembers the processor's customer, the SetupIntent the browser
-- confirms and the charge it made, so a crash at any step can be finished from Stripe's record.
ALTER TABLE payment_attempts ADD COLUMN gateway_customer TEXT;
ALTER TABLE payment_attempts ADD COLUMN setup_ref TEXT;
ALTER TABLE payment_attempts ADD COLUMN charge_ref TEXT;
CREATE INDEX payment_attempts_setup_ref ON payment_attempts (setup_ref);
CREATE INDEX payment_attempts_charge_ref ON payment_attempts (charge_ref);

-- Off-session renewals charge the saved card on the processor's customer.
ALTER TABLE payment_methods ADD COLUMN gateway_customer TEXT;

-- Refunds of a payment intent. The row is written, and the intent's amount_refunded reserved,
-- before the gateway is called; its id is the gateway idempotency key.
CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    payment_intent_id TEXT NOT NULL REFERENCES payment_intents (id),
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL,
    metadata TEXT,
    failure_reason TEXT,
    gateway TEXT NOT NULL,
    gateway_ref TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX refunds_owner ON refunds (merchant_id, livemode, id);
CREATE INDEX refunds_payment_intent ON refunds (payment_intent_id, id);
CREATE INDEX refunds_status ON refunds (status, updated_at);

-- The sandbox's own refund ledger, keyed by our idempotency key like its charges.
CREATE TABLE sandbox_refunds (
    idempotency_key TEXT PRIMARY KEY,
    charge_key TEXT NOT NULL,
    amount BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX sandbox_refunds_charge ON sandbox_refunds (charge_key);

-- Stripe events received and applied, by Stripe's event id: a redelivery is answered at once, and
-- operators can see what Stripe told us.
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    livemode BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX stripe_events_object ON stripe_events (object_id);
