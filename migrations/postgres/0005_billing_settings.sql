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
