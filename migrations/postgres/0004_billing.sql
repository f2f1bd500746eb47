-- The billing engine: subscription terms from seed 002, the engine's due work, invoice collection
-- state, per-merchant invoice numbers, and test clocks.

CREATE TABLE test_clocks (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    name TEXT,
    frozen_time BIGINT NOT NULL,
    status TEXT NOT NULL,
    -- When the running advance began (system time): an advance whose process died lets go of the
    -- clock after a while.
    advancing_since BIGINT,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX test_clocks_owner ON test_clocks (merchant_id, livemode, id);

-- Terms (seed 002).
ALTER TABLE subscriptions ADD COLUMN payment_behavior TEXT NOT NULL DEFAULT 'DEFAULT_ACTIVE';
ALTER TABLE subscriptions ADD COLUMN proration_behavior TEXT NOT NULL DEFAULT 'CREATE_PRORATIONS';
ALTER TABLE subscriptions ADD COLUMN commitment_amount TEXT;
ALTER TABLE subscriptions ADD COLUMN commitment_duration TEXT;
ALTER TABLE subscriptions ADD COLUMN overage_factor TEXT;
ALTER TABLE subscriptions ADD COLUMN enable_true_up BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN parent_subscription_id TEXT;
ALTER TABLE subscriptions ADD COLUMN invoice_billing TEXT NOT NULL DEFAULT 'INVOICE_TO_SELF';
ALTER TABLE subscriptions ADD COLUMN payment_terms TEXT;
ALTER TABLE subscriptions ADD COLUMN phases TEXT;
-- The engine's state: the clock the subscription lives on (NULL: the system clock), whether the
-- current period's in-advance invoice exists, which reminders went out, and when to look again.
ALTER TABLE subscriptions ADD COLUMN test_clock TEXT;
ALTER TABLE subscriptions ADD COLUMN cycle_invoiced BIGINT NOT NULL DEFAULT 1;
ALTER TABLE subscriptions ADD COLUMN upcoming_sent_for BIGINT;
ALTER TABLE subscriptions ADD COLUMN trial_will_end_sent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN next_action_at BIGINT;
ALTER TABLE subscriptions ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX subscriptions_due ON subscriptions (next_action_at) WHERE test_clock IS NULL;
CREATE INDEX subscriptions_clock_due ON subscriptions (test_clock, next_action_at);
CREATE UNIQUE INDEX subscriptions_lookup_key ON subscriptions (merchant_id, livemode, lookup_key);
CREATE INDEX subscriptions_parent ON subscriptions (parent_subscription_id);

-- `plan` items are billed every period; `recurring` extra items too; `one_time` items once, on the
-- first invoice.
ALTER TABLE subscription_items ADD COLUMN kind TEXT NOT NULL DEFAULT 'plan';

-- Collection: an attempt in flight (`charging` = 1 while attempt `attempt_count` is at the gateway;
-- `next_payment_attempt` is then its lease), the first failure (dunning counts from it), the last
-- decline, and the card the invoice is charged to.
ALTER TABLE invoices ADD COLUMN collection_method TEXT NOT NULL DEFAULT 'CHARGE_AUTOMATICALLY';
ALTER TABLE invoices ADD COLUMN charging BIGINT NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN first_failed_at BIGINT;
ALTER TABLE invoices ADD COLUMN last_decline_code TEXT;
ALTER TABLE invoices ADD COLUMN payment_method_id TEXT;
ALTER TABLE invoices ADD COLUMN test_clock TEXT;
ALTER TABLE invoices ADD COLUMN paid_at BIGINT;
CREATE INDEX invoices_due ON invoices (next_payment_attempt) WHERE test_clock IS NULL;
CREATE INDEX invoices_clock_due ON invoices (test_clock, next_payment_attempt);
CREATE INDEX invoices_subscription ON invoices (subscription_id, period_start);
CREATE INDEX invoices_customer ON invoices (customer_id);

-- `item` lines bill a price; `true_up` and `overage` lines come from a commitment.
ALTER TABLE invoice_lines ADD COLUMN kind TEXT NOT NULL DEFAULT 'item';

-- Invoice numbers without gaps and without counting rows: one counter per merchant and mode.
CREATE TABLE invoice_counters (
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    last_number BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, livemode)
);
INSERT INTO invoice_counters (merchant_id, livemode, last_number)
    SELECT merchant_id, livemode, COUNT(*) FROM invoices GROUP BY merchant_id, livemode;

CREATE INDEX payment_intents_invoice ON payment_intents (invoice_id);
