-- Settlement: feedback, rewards paid once, spend counters and the ledger.
-- Portable SQL like the first migration; amounts are integer minor units.

-- One row per upstream feedback id: the same feedback twice is one.
CREATE TABLE feedback (
    id TEXT PRIMARY KEY,
    business_id TEXT NOT NULL,
    location_id TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    provider_transaction_id TEXT,
    amount_minor BIGINT,
    currency TEXT,
    purchased_at TEXT,
    quality_score BIGINT NOT NULL,
    destination TEXT NOT NULL,
    -- waiting, matched, no_matching_purchase, ambiguous, not_rewarded,
    -- rejected
    state TEXT NOT NULL,
    reason TEXT,
    purchase_ref TEXT,
    received_at TEXT NOT NULL,
    match_deadline TEXT NOT NULL,
    reviewed_by TEXT,
    review_note TEXT,
    reviewed_at TEXT,
    updated_at TEXT NOT NULL
);

CREATE INDEX feedback_state ON feedback (state, match_deadline);

-- One settlement per feedback (its id is derived from the feedback id) and
-- one per purchase: a transaction backs at most one reward.
CREATE TABLE settlements (
    id TEXT PRIMARY KEY,
    feedback_id TEXT NOT NULL,
    -- kvitto's transaction id, or receipt:<business>:<number> for a purchase
    -- approved by review against a paper receipt.
    purchase_ref TEXT NOT NULL,
    business_id TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    rail TEXT NOT NULL,
    destination TEXT NOT NULL,
    purchase_amount_minor BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    fee_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    quality_score BIGINT NOT NULL,
    state TEXT NOT NULL,
    provider_ref TEXT,
    failure_reason TEXT,
    clawed_back BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    version BIGINT NOT NULL,
    budget_period TEXT NOT NULL,
    customer_day TEXT NOT NULL,
    customer_month TEXT NOT NULL,
    purchased_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    submitted_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL,
    CONSTRAINT settlements_feedback UNIQUE (feedback_id),
    CONSTRAINT settlements_purchase UNIQUE (purchase_ref)
);

CREATE INDEX settlements_due ON settlements (state, next_attempt_at);
CREATE INDEX settlements_provider_ref ON settlements (provider_ref);

-- Reward spend per business and month, and per customer and day or month.
-- Reservations are conditional increments, so concurrent settlements can
-- never spend past a limit.
CREATE TABLE spend_counters (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    period TEXT NOT NULL,
    used_minor BIGINT NOT NULL,
    PRIMARY KEY (scope, subject, period)
);

-- Double-entry ledger. A journal is one balanced posting; entries are only
-- ever inserted. (settlement_id, kind) makes each posting happen once.
CREATE TABLE ledger_journals (
    id TEXT PRIMARY KEY,
    settlement_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CONSTRAINT ledger_journals_once UNIQUE (settlement_id, kind)
);

-- amount_minor is signed: debits positive, credits negative; every
-- journal's entries sum to zero.
CREATE TABLE ledger_entries (
    journal_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    PRIMARY KEY (journal_id, account)
);

CREATE INDEX ledger_entries_account ON ledger_entries (account);

-- Settlement events waiting for kvitto.settlements: written in the same
-- database transaction as the state change they describe.
CREATE TABLE settlement_outbox (
    id TEXT PRIMARY KEY,
    settlement_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    published BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX settlement_outbox_unpublished ON settlement_outbox (published, created_at);

-- Businesses onboarded to Stripe Connect.
CREATE TABLE stripe_accounts (
    account_id TEXT PRIMARY KEY,
    business_id TEXT NOT NULL,
    charges_enabled BIGINT NOT NULL,
    payouts_enabled BIGINT NOT NULL,
    details_submitted BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT stripe_accounts_business UNIQUE (business_id)
);
