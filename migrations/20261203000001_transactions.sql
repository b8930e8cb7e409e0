-- Canonical transactions and the provider events that built them.
-- Portable SQL: the same file runs on PostgreSQL and SQLite. Timestamps are
-- RFC 3339 UTC text with fixed millisecond precision, so they sort as text.

CREATE TABLE transactions (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    business_id TEXT NOT NULL,
    location_id TEXT NOT NULL,
    provider_transaction_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    rejection_reason TEXT,
    verification TEXT NOT NULL,
    state TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    occurred_at_local TEXT NOT NULL,
    line_items TEXT NOT NULL,
    source_event_ids TEXT NOT NULL,
    source_version BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- One row per provider transaction: the deduplication of effects.
    CONSTRAINT transactions_provider_ref UNIQUE (provider, integration_id, provider_transaction_id)
);

CREATE INDEX transactions_updated_at ON transactions (updated_at);
CREATE INDEX transactions_business_occurred ON transactions (business_id, location_id, occurred_at);

-- Every provider event kvitto has processed. The primary key is the
-- deduplication of deliveries: a second delivery of one event finds its row.
CREATE TABLE processed_events (
    provider TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    provider_event_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    transaction_id TEXT,
    outcome TEXT NOT NULL,
    -- 0 until the resulting transaction event is on the output topic.
    published BIGINT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (provider, integration_id, provider_event_id)
);

CREATE INDEX processed_events_event_id ON processed_events (event_id);
