-- A merchant's billing settings, one row per (merchant, mode) once changed; without a row the
-- defaults hold. after_final_failure: the subscription's status after dunning's last failed
-- attempt (CANCELED or UNPAID).
CREATE TABLE billing_settings (
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    livemode BIGINT NOT NULL,
    after_final_failure TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, livemode)
);

-- When the engine must look at an open invoice for something other than a charge: a SEND_INVOICE
-- invoice's due date (overdue), or dunning's last day after a hard decline (uncollectible).
ALTER TABLE invoices ADD COLUMN collection_deadline BIGINT;
CREATE INDEX invoices_deadline ON invoices (collection_deadline) WHERE test_clock IS NULL;
CREATE INDEX invoices_clock_deadline ON invoices (test_clock, collection_deadline);
