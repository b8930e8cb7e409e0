//! Mapping between [`Transaction`] and its row.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::{StoreError, format_time};
use crate::canonical::{PaymentState, Transaction, Verdict, VerificationMode};

pub const TRANSACTION_COLUMNS: &str = "id, provider, integration_id, business_id, location_id, \
    provider_transaction_id, verdict, rejection_reason, verification, state, amount_minor, \
    currency, occurred_at, occurred_at_local, line_items, source_event_ids, source_version, \
    revision, updated_at";

/// Inserts a new transaction; false when a row with its id exists already.
pub async fn insert_transaction(
    conn: &mut sqlx::AnyConnection,
    t: &Transaction,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO transactions (id, provider, integration_id, business_id, location_id, \
         provider_transaction_id, verdict, rejection_reason, verification, state, amount_minor, \
         currency, occurred_at, occurred_at_local, line_items, source_event_ids, source_version, \
         revision, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
         ON CONFLICT DO NOTHING",
    )
    .bind(t.id.to_string())
    .bind(t.provider.as_str())
    .bind(&t.integration_id)
    .bind(&t.business_id)
    .bind(&t.location_id)
    .bind(&t.provider_transaction_id)
    .bind(t.verdict.as_str())
    .bind(t.rejection_reason.as_deref())
    .bind(t.verification.as_str())
    .bind(t.state.as_str())
    .bind(t.amount_minor)
    .bind(&t.currency)
    .bind(format_time(t.occurred_at))
    .bind(&t.occurred_at_local)
    .bind(to_json(&t.line_items)?)
    .bind(to_json(&t.source_event_ids)?)
    .bind(t.source_version)
    .bind(t.revision)
    .bind(format_time(t.updated_at))
    .bind(format_time(t.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Replaces a transaction if it is still at `expected_revision`.
pub async fn update_transaction(
    conn: &mut sqlx::AnyConnection,
    t: &Transaction,
    expected_revision: i64,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE transactions SET verdict = $1, rejection_reason = $2, verification = $3, \
         state = $4, amount_minor = $5, currency = $6, occurred_at = $7, occurred_at_local = $8, \
         line_items = $9, source_event_ids = $10, source_version = $11, revision = $12, \
         updated_at = $13, location_id = $14 \
         WHERE id = $15 AND revision = $16",
    )
    .bind(t.verdict.as_str())
    .bind(t.rejection_reason.as_deref())
    .bind(t.verification.as_str())
    .bind(t.state.as_str())
    .bind(t.amount_minor)
    .bind(&t.currency)
    .bind(format_time(t.occurred_at))
    .bind(&t.occurred_at_local)
    .bind(to_json(&t.line_items)?)
    .bind(to_json(&t.source_event_ids)?)
    .bind(t.source_version)
    .bind(t.revision)
    .bind(format_time(t.updated_at))
    .bind(&t.location_id)
    .bind(t.id.to_string())
    .bind(expected_revision)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub fn transaction_from_row(row: &AnyRow) -> Result<Transaction, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(name)?) };
    let corrupt = |what: &str, value: &str| StoreError::Corrupt(format!("{what} {value:?}"));
    let id = text("id")?;
    let provider = text("provider")?;
    let verdict = text("verdict")?;
    let verification = text("verification")?;
    let state = text("state")?;
    Ok(Transaction {
        id: Uuid::parse_str(&id).map_err(|_| corrupt("id", &id))?,
        provider: provider
            .parse()
            .map_err(|_| corrupt("provider", &provider))?,
        integration_id: text("integration_id")?,
        business_id: text("business_id")?,
        location_id: text("location_id")?,
        provider_transaction_id: text("provider_transaction_id")?,
        verdict: match verdict.as_str() {
            "verified" => Verdict::Verified,
            "rejected" => Verdict::Rejected,
            _ => return Err(corrupt("verdict", &verdict)),
        },
        rejection_reason: row.try_get("rejection_reason")?,
        verification: match verification.as_str() {
            "api" => VerificationMode::Api,
            "signature-only" => VerificationMode::SignatureOnly,
            _ => return Err(corrupt("verification", &verification)),
        },
        state: PaymentState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        amount_minor: row.try_get("amount_minor")?,
        currency: text("currency")?,
        occurred_at: parse_time(&text("occurred_at")?)?,
        occurred_at_local: text("occurred_at_local")?,
        line_items: from_json(&text("line_items")?)?,
        source_event_ids: from_json(&text("source_event_ids")?)?,
        source_version: row.try_get("source_version")?,
        revision: row.try_get("revision")?,
        updated_at: parse_time(&text("updated_at")?)?,
    })
}

pub fn parse_time(value: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt(format!("timestamp {value:?}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(value: &str) -> Result<T, StoreError> {
    serde_json::from_str(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}
