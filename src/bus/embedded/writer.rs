//! The embedded bus's single writer: every publish, commit and retention
//! purge goes through one task, which commits all requests pending at that
//! moment in one SQLite transaction (group commit) and answers each request
//! only after `COMMIT` returned. One writer also means the process never
//! contends with itself for SQLite's write lock.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{info, warn};

use crate::bus::BusError;
use crate::telemetry::throttle::{Throttle, ThrottleSite};

static BATCH_FAILED_LOG: Throttle = Throttle::new(ThrottleSite::BusWriteFailed, 60);

/// Writes that may wait for the writer before publishers feel back-pressure.
const QUEUE_CAPACITY: usize = 4_096;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1_024;
/// How often retention runs (the first run is at open).
const RETENTION_INTERVAL_SECS: u64 = 600;
/// Most rows one retention pass deletes per rule, so the write lock is held
/// briefly; a backlog is worked off over several passes.
const PURGE_MAX_ROWS: i64 = 10_000;

/// One request to the writer; `reply_tx` receives the offset written (publish),
/// the offset stored (commit) or the number of rows deleted (purge).
pub(super) struct Write {
    pub kind: WriteKind,
    pub reply_tx: oneshot::Sender<Result<i64, BusError>>,
}

pub(super) enum WriteKind {
    Publish {
        topic: String,
        key: String,
        headers: String,
        payload: Vec<u8>,
    },
    Commit {
        group: String,
        topic: String,
        next_offset: i64,
    },
    Purge {
        cutoff_ms: i64,
        webhook_prefix: String,
    },
}

/// Starts the writer; it stops when every sender is dropped.
pub(super) fn spawn(pool: SqlitePool, written: std::sync::Arc<Notify>) -> mpsc::Sender<Write> {
    let (writes_tx, writes_rx) = mpsc::channel(QUEUE_CAPACITY);
    tokio::spawn(run(pool, writes_rx, written));
    writes_tx
}

async fn run(
    pool: SqlitePool,
    mut writes_rx: mpsc::Receiver<Write>,
    written: std::sync::Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while writes_rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that gave up (timed out) already reported failure; not
        // writing its message spares a duplicate.
        batch.retain(|write: &Write| !write.reply_tx.is_closed());
        if batch.is_empty() {
            continue;
        }
        match commit_batch(&pool, &batch).await {
            Ok(values) => {
                written.notify_waiters();
                for (write, value) in batch.drain(..).zip(values) {
                    let _ = write.reply_tx.send(Ok(value));
                }
            }
            Err(error) => {
                // A full or failing disk fails every batch: throttled.
                if let Some(suppressed) = BATCH_FAILED_LOG.allow() {
                    warn!(%error, writes = batch.len(), suppressed, "embedded bus batch not committed");
                }
                for write in batch.drain(..) {
                    let reason = format!("embedded bus write failed: {error}");
                    let _ = write.reply_tx.send(Err(BusError::Unavailable(reason)));
                }
            }
        }
    }
}

/// Applies every write in one transaction; nothing is answered before COMMIT.
async fn commit_batch(pool: &SqlitePool, batch: &[Write]) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut values = Vec::with_capacity(batch.len());
    for write in batch {
        values.push(apply(&mut tx, &write.kind, now_ms).await?);
    }
    tx.commit().await?;
    Ok(values)
}

async fn apply(
    conn: &mut SqliteConnection,
    kind: &WriteKind,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    match kind {
        WriteKind::Publish {
            topic,
            key,
            headers,
            payload,
        } => {
            // The counter lives apart from the messages so offsets never
            // repeat after retention emptied a topic.
            let offset: i64 = sqlx::query_scalar(
                "INSERT INTO bus_topics (topic, next_offset) VALUES (?, 1)
                 ON CONFLICT (topic) DO UPDATE SET next_offset = next_offset + 1
                 RETURNING next_offset - 1",
            )
            .bind(topic)
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query(
                r#"INSERT INTO bus_messages (topic, "offset", key, headers, payload, created_at_ms)
                   VALUES (?, ?, ?, ?, ?, ?)"#,
            )
            .bind(topic)
            .bind(offset)
            .bind(key)
            .bind(headers)
            .bind(payload)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            Ok(offset)
        }
        WriteKind::Commit {
            group,
            topic,
            next_offset,
        } => {
            sqlx::query(
                "INSERT INTO bus_offsets (group_id, topic, next_offset, updated_at_ms)
                 VALUES (?, ?, ?, ?)
                 ON CONFLICT (group_id, topic) DO UPDATE SET
                     next_offset = MAX(next_offset, excluded.next_offset),
                     updated_at_ms = excluded.updated_at_ms",
            )
            .bind(group)
            .bind(topic)
            .bind(next_offset)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            Ok(*next_offset)
        }
        WriteKind::Purge {
            cutoff_ms,
            webhook_prefix,
        } => purge(conn, *cutoff_ms, webhook_prefix).await,
    }
}

/// Deletes old messages: on webhook topics only those below every group's
/// committed offset (a topic no group has committed keeps everything), on
/// other topics all of them.
async fn purge(
    conn: &mut SqliteConnection,
    cutoff_ms: i64,
    webhook_prefix: &str,
) -> Result<i64, sqlx::Error> {
    let webhooks = sqlx::query(
        r#"DELETE FROM bus_messages WHERE (topic, "offset") IN (
               SELECT m.topic, m."offset" FROM bus_messages m
               WHERE m.created_at_ms < ?1
                 AND substr(m.topic, 1, length(?2)) = ?2
                 AND m."offset" < (SELECT MIN(o.next_offset) FROM bus_offsets o
                                   WHERE o.topic = m.topic)
               LIMIT ?3)"#,
    )
    .bind(cutoff_ms)
    .bind(webhook_prefix)
    .bind(PURGE_MAX_ROWS)
    .execute(&mut *conn)
    .await?;
    let others = sqlx::query(
        r#"DELETE FROM bus_messages WHERE (topic, "offset") IN (
               SELECT topic, "offset" FROM bus_messages
               WHERE created_at_ms < ?1 AND substr(topic, 1, length(?2)) <> ?2
               LIMIT ?3)"#,
    )
    .bind(cutoff_ms)
    .bind(webhook_prefix)
    .bind(PURGE_MAX_ROWS)
    .execute(&mut *conn)
    .await?;
    let deleted = webhooks.rows_affected() + others.rows_affected();
    Ok(i64::try_from(deleted).unwrap_or(i64::MAX))
}

/// Runs retention every [`RETENTION_INTERVAL_SECS`] until the bus is dropped.
pub(super) fn spawn_retention(
    writes_tx: mpsc::WeakSender<Write>,
    max_age: Duration,
    webhook_prefix: String,
) {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(RETENTION_INTERVAL_SECS));
        loop {
            interval.tick().await;
            // A weak sender: retention alone does not keep the writer alive.
            let Some(writes_tx) = writes_tx.upgrade() else {
                break;
            };
            let cutoff_ms = chrono::Utc::now()
                .timestamp_millis()
                .saturating_sub(max_age_ms);
            let (reply_tx, reply_rx) = oneshot::channel();
            let kind = WriteKind::Purge {
                cutoff_ms,
                webhook_prefix: webhook_prefix.clone(),
            };
            if writes_tx.send(Write { kind, reply_tx }).await.is_err() {
                break;
            }
            drop(writes_tx);
            match reply_rx.await {
                Ok(Ok(0)) | Err(_) => {}
                Ok(Ok(deleted)) => info!(deleted, "embedded bus retention deleted messages"),
                Ok(Err(error)) => warn!(%error, "embedded bus retention failed"),
            }
        }
    });
}
