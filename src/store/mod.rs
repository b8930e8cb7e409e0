//! The database: PostgreSQL in production, SQLite as the embedded default,
//! through sqlx's `Any` driver and one set of portable migrations.
//!
//! Guarantee: every effect of an event is written in one database
//! transaction together with the event's row in `processed_events`, whose
//! primary key makes a second delivery of the same provider event a no-op.
//! Updates to a transaction are optimistic (`revision` compare-and-set), so
//! two writers can never interleave into a state neither of them decided.

mod rows;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use self::rows::parse_time;
use crate::canonical::Transaction;
use crate::config::DatabaseConfig;
use crate::providers::ProviderKind;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How many times an optimistic update is retried when another writer won.
const MAX_CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("transaction kept changing under concurrent writers")]
    Contended,
}

impl StoreError {
    /// Whether the same write can never succeed: the data itself is refused
    /// (SQLSTATE class 22, e.g. a NUL byte in text on PostgreSQL) or a
    /// stored row cannot be read back. Everything else (connections, locks,
    /// timeouts) may pass on a retry.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Corrupt(_) => true,
            StoreError::Database(sqlx::Error::Database(error)) => {
                error.code().is_some_and(|code| code.starts_with("22"))
            }
            StoreError::Database(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => true,
            _ => false,
        }
    }
}

/// Which provider event a write comes from.
#[derive(Debug, Clone)]
pub struct EventRef<'a> {
    pub provider: ProviderKind,
    pub integration_id: &'a str,
    pub provider_event_id: &'a str,
    /// kvitto's stable id of the event (the bus header `kvitto-event-id`).
    pub event_id: &'a str,
}

/// What the database already knows about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    pub transaction_id: Option<String>,
    pub published: bool,
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The transaction was created or changed; publish this revision.
    Changed(Box<Transaction>),
    /// The event was recorded but changed nothing (same facts, or older
    /// than the stored state).
    Unchanged { transaction_id: String, stale: bool },
    /// Another delivery of the same event got there first.
    Duplicate,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Connects (creating the SQLite file and its folder when missing).
    pub async fn connect(config: &DatabaseConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = prepare_url(&config.url)?;
        let sqlite = url.starts_with("sqlite:");
        // SQLite takes one writer at a time; a single connection turns what
        // would be lock contention between read-then-write transactions into
        // a queue.
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { config.max_connections })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets readers run beside the writer; FULL makes a
                        // commit durable before kvitto commits the bus offset.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Store { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Readiness: is the database answering?
    pub async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// What is known about an event already, if anything.
    pub async fn seen(&self, event: &EventRef<'_>) -> Result<Option<SeenEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT transaction_id, published FROM processed_events \
             WHERE provider = $1 AND integration_id = $2 AND provider_event_id = $3",
        )
        .bind(event.provider.as_str())
        .bind(event.integration_id)
        .bind(event.provider_event_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| -> Result<SeenEvent, StoreError> {
            Ok(SeenEvent {
                transaction_id: row.try_get("transaction_id")?,
                published: row.try_get::<i64, _>("published")? != 0,
            })
        })
        .transpose()
    }

    /// Records an event that has no effect on any transaction (ignored
    /// types). Returns false when it was recorded before.
    pub async fn record_without_effect(
        &self,
        event: &EventRef<'_>,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_processed(&mut tx, event, None, outcome, true).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Applies a candidate transaction decided from one event, in one
    /// database transaction with the event's dedup row.
    ///
    /// `candidate.revision` and `source_event_ids` are ignored: the store
    /// sets them. `successor` decides, given the stored row and the
    /// candidate, what replaces the row (`None`: the candidate is older and
    /// the row stays).
    pub async fn apply(
        &self,
        event: &EventRef<'_>,
        candidate: &Transaction,
        successor: impl Fn(&Transaction, &Transaction) -> Option<Transaction>,
    ) -> Result<Applied, StoreError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            if let Some(applied) = self.try_apply(event, candidate, &successor).await? {
                return Ok(applied);
            }
        }
        Err(StoreError::Contended)
    }

    /// One optimistic attempt; `None` when a concurrent writer changed the
    /// row in between and the caller should try again.
    async fn try_apply(
        &self,
        event: &EventRef<'_>,
        candidate: &Transaction,
        successor: &impl Fn(&Transaction, &Transaction) -> Option<Transaction>,
    ) -> Result<Option<Applied>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = candidate.id.to_string();
        let stored = fetch_transaction(&mut tx, &id).await?;
        let outcome = if candidate.verdict == crate::canonical::Verdict::Verified {
            "verified"
        } else {
            "rejected"
        };
        let Some(stored) = stored else {
            let mut fresh = candidate.clone();
            fresh.revision = 1;
            fresh.source_event_ids = vec![event.provider_event_id.to_string()];
            if !insert_processed(&mut tx, event, Some(&id), outcome, false).await? {
                return Ok(Some(Applied::Duplicate));
            }
            if !rows::insert_transaction(&mut tx, &fresh).await? {
                return Ok(None);
            }
            tx.commit().await?;
            return Ok(Some(Applied::Changed(Box::new(fresh))));
        };

        let next = successor(&stored, candidate);
        let changed = next.as_ref().filter(|next| !same_facts(&stored, next));
        let Some(next) = changed else {
            let stale = next.is_none();
            let outcome = if stale { "stale" } else { outcome };
            if !insert_processed(&mut tx, event, Some(&id), outcome, true).await? {
                return Ok(Some(Applied::Duplicate));
            }
            tx.commit().await?;
            return Ok(Some(Applied::Unchanged {
                transaction_id: id,
                stale,
            }));
        };

        let mut next = next.clone();
        next.revision = stored.revision + 1;
        next.source_event_ids = stored.source_event_ids.clone();
        next.source_event_ids
            .push(event.provider_event_id.to_string());
        next.source_version = next.source_version.max(stored.source_version);
        if !insert_processed(&mut tx, event, Some(&id), outcome, false).await? {
            return Ok(Some(Applied::Duplicate));
        }
        if !rows::update_transaction(&mut tx, &next, stored.revision).await? {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(Applied::Changed(Box::new(next))))
    }

    /// Notes that the event's resulting transaction event is on the output
    /// topic, so a redelivery does not publish it again.
    pub async fn mark_published(&self, event: &EventRef<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE processed_events SET published = 1 \
             WHERE provider = $1 AND integration_id = $2 AND provider_event_id = $3",
        )
        .bind(event.provider.as_str())
        .bind(event.integration_id)
        .bind(event.provider_event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn transaction(&self, id: &str) -> Result<Option<Transaction>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_transaction(&mut conn, id).await
    }

    /// The most recently changed transactions, newest first.
    pub async fn recent_transactions(&self, limit: i64) -> Result<Vec<Transaction>, StoreError> {
        let rows: Vec<AnyRow> = sqlx::query(&format!(
            "SELECT {} FROM transactions ORDER BY updated_at DESC, id LIMIT $1",
            rows::TRANSACTION_COLUMNS
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::transaction_from_row).collect()
    }

    pub async fn count_transactions(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM transactions")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }
}

/// Inserts the event's dedup row; false when it exists already.
async fn insert_processed(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &EventRef<'_>,
    transaction_id: Option<&str>,
    outcome: &str,
    published: bool,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO processed_events \
         (provider, integration_id, provider_event_id, event_id, transaction_id, outcome, published, processed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (provider, integration_id, provider_event_id) DO NOTHING",
    )
    .bind(event.provider.as_str())
    .bind(event.integration_id)
    .bind(event.provider_event_id)
    .bind(event.event_id)
    .bind(transaction_id)
    .bind(outcome)
    .bind(i64::from(published))
    .bind(format_time(Utc::now()))
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn fetch_transaction(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<Transaction>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM transactions WHERE id = $1",
        rows::TRANSACTION_COLUMNS
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(rows::transaction_from_row).transpose()
}

/// Whether a candidate would change nothing a consumer cares about.
fn same_facts(stored: &Transaction, candidate: &Transaction) -> bool {
    stored.verdict == candidate.verdict
        && stored.rejection_reason == candidate.rejection_reason
        && stored.state == candidate.state
        && stored.amount_minor == candidate.amount_minor
        && stored.currency == candidate.currency
        && stored.occurred_at == candidate.occurred_at
        && stored.line_items == candidate.line_items
        && stored.location_id == candidate.location_id
}

/// RFC 3339 UTC with millisecond precision: sorts correctly as text.
pub fn format_time(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Adds `mode=rwc` to SQLite URLs and creates the file's folder.
fn prepare_url(url: &str) -> Result<String, StoreError> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(url.to_string());
    };
    let path = rest.split('?').next().unwrap_or(rest);
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Corrupt(format!("creating {}: {e}", parent.display())))?;
    }
    if url.contains("mode=") {
        Ok(url.to_string())
    } else if url.contains('?') {
        Ok(format!("{url}&mode=rwc"))
    } else {
        Ok(format!("{url}?mode=rwc"))
    }
}
