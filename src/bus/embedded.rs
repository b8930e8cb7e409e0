//! The embedded durable bus: one SQLite file, used when no Kafka broker is
//! configured, keeping the same contract as Kafka.
//!
//! - **Durable publish.** Every write goes through one writer task that
//!   commits all pending requests in one transaction (group commit) and
//!   answers each caller only after `COMMIT` returned. The file runs in WAL
//!   mode with `synchronous=FULL`, so a publish that returned survives
//!   `kill -9` and power loss.
//! - **Order.** Each topic is one partition (partition 0) with a total
//!   order: offsets are handed out by the writer inside the transaction, from
//!   a per-topic counter that never goes back, not even after retention.
//! - **At least once.** A consumer starts at its group's committed offset
//!   and only [`EmbeddedConsumer::commit`] moves that offset, monotonically.
//!   The bus assumes one consumer per (group, topic): there is no partition
//!   assignment, so two consumers of one group would both see every message.
//! - **Retention.** A background task deletes messages older than
//!   `embedded_retention_hours`; on webhook topics (`<prefix>webhooks.*`) only
//!   those every group has also committed, so an unprocessed webhook is never
//!   lost. Other topics (transactions, dead letters) are pruned by age alone,
//!   like Kafka's time-based retention.

mod writer;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::sync::{Notify, mpsc, oneshot};

use self::writer::{Write, WriteKind};
use super::lag::{LagReporter, PartitionLag, partition_lag};
use super::{BusError, BusMessage, Delivery};
use crate::config::BusConfig;
use crate::providers::ProviderKind;

/// The only partition of every embedded topic.
const PARTITION: i32 = 0;
/// Messages a consumer reads per query.
const READ_BATCH: i64 = 256;
/// How often an idle consumer looks for messages written by another process
/// (writes from this process wake it at once).
const POLL_INTERVAL_MS: u64 = 1_000;
/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT_SECS: u64 = 5;
/// Connections for readers; the writer borrows one per batch.
const MAX_CONNECTIONS: u32 = 8;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS bus_topics (
    topic       TEXT PRIMARY KEY,
    next_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_messages (
    topic         TEXT NOT NULL,
    "offset"      INTEGER NOT NULL,
    key           TEXT NOT NULL,
    headers       TEXT NOT NULL,
    payload       BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, "offset")
);
CREATE INDEX IF NOT EXISTS bus_messages_created ON bus_messages (created_at_ms);
CREATE TABLE IF NOT EXISTS bus_offsets (
    group_id      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    next_offset   INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic)
);
"#;

/// A handle to the embedded bus, cheap to clone. The writer task and the
/// retention task stop once the last handle is dropped.
#[derive(Clone)]
pub struct EmbeddedBus {
    pool: SqlitePool,
    writes_tx: mpsc::Sender<Write>,
    /// Woken after every committed batch, so consumers in this process see
    /// new messages at once.
    written: Arc<Notify>,
    write_timeout: Duration,
}

/// One consumer of one topic in one group.
pub struct EmbeddedConsumer {
    bus: EmbeddedBus,
    group: String,
    topic: String,
    /// The next offset to read; starts at the group's committed offset.
    position: i64,
    buffer: VecDeque<Delivery>,
    lag: Option<LagReporter>,
}

impl EmbeddedBus {
    /// Opens (creating it and its directory when missing) the SQLite file at
    /// `config.embedded_path` and starts the writer and retention tasks.
    pub async fn open(config: &BusConfig) -> Result<Self, BusError> {
        let pool = open_pool(&config.embedded_path).await?;
        let written = Arc::new(Notify::new());
        let writes_tx = writer::spawn(pool.clone(), written.clone());
        let bus = EmbeddedBus {
            pool,
            writes_tx,
            written,
            write_timeout: Duration::from_millis(config.publish_timeout_ms),
        };
        if config.embedded_retention_hours > 0 {
            let max_age = Duration::from_secs(config.embedded_retention_hours * 3_600);
            let webhook_prefix = format!("{}webhooks.", config.topic_prefix);
            writer::spawn_retention(bus.writes_tx.downgrade(), max_age, webhook_prefix);
        }
        Ok(bus)
    }

    /// Writes a message and returns once its transaction has committed.
    ///
    /// On timeout the write may still commit later; the caller must treat it
    /// as not stored (and a retry may duplicate it, which at-least-once
    /// allows).
    pub async fn publish(
        &self,
        topic: &str,
        message: &BusMessage,
        timeout: Duration,
    ) -> Result<(), BusError> {
        let headers = serde_json::to_string(&message.headers)
            .map_err(|error| BusError::Fatal(format!("encode headers: {error}")))?;
        let kind = WriteKind::Publish {
            topic: topic.to_owned(),
            key: message.key.clone(),
            headers,
            payload: message.payload.clone(),
        };
        self.write(kind, timeout).await.map(drop)
    }

    /// Joins `group` on `topic`, starting after the group's committed offset.
    pub async fn consumer(&self, group: &str, topic: &str) -> Result<EmbeddedConsumer, BusError> {
        let committed: Option<i64> = sqlx::query_scalar(
            "SELECT next_offset FROM bus_offsets WHERE group_id = ? AND topic = ?",
        )
        .bind(group)
        .bind(topic)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(EmbeddedConsumer {
            bus: self.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            position: committed.unwrap_or(0),
            buffer: VecDeque::new(),
            lag: None,
        })
    }

    /// Readiness: the file answers a query and the writer is running.
    pub async fn check(&self) -> Result<(), BusError> {
        if self.writes_tx.is_closed() {
            return Err(BusError::Fatal("embedded bus writer stopped".into()));
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Reads up to `max` messages of `topic` from its first retained offset.
    pub async fn read_all(&self, topic: &str, max: usize) -> Result<Vec<Delivery>, BusError> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.read_from(topic, 0, limit).await
    }

    async fn read_from(
        &self,
        topic: &str,
        from: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>, BusError> {
        let rows = sqlx::query(
            r#"SELECT "offset", key, headers, payload FROM bus_messages
               WHERE topic = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?"#,
        )
        .bind(topic)
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| delivery_from_row(topic, row))
            .collect()
    }

    /// Hands `kind` to the writer and waits, at most `timeout`, for its commit.
    async fn write(&self, kind: WriteKind, timeout: Duration) -> Result<i64, BusError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let request = Write { kind, reply_tx };
        let exchange = async {
            self.writes_tx
                .send(request)
                .await
                .map_err(|_| BusError::Fatal("embedded bus writer stopped".into()))?;
            reply_rx
                .await
                .map_err(|_| BusError::Fatal("embedded bus writer dropped a write".into()))?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable(format!(
                "embedded bus write not committed within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

impl EmbeddedConsumer {
    /// Reports this consumer's lag as `provider`'s until it is dropped.
    pub fn report_lag(&mut self, provider: ProviderKind) {
        // The pool only: the task must not keep the writer alive.
        let pool = self.bus.pool.clone();
        let (group, topic) = (self.group.clone(), self.topic.clone());
        self.lag = Some(LagReporter::spawn(provider, move || {
            let (pool, group, topic) = (pool.clone(), group.clone(), topic.clone());
            async move { Ok(vec![lag(&pool, &group, &topic).await?]) }
        }));
    }

    /// The next message, waiting as long as it takes for one to arrive.
    /// Cancel-safe: a message is only taken from the buffer when returned.
    pub async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                return Ok(delivery);
            }
            // Register for the wake-up before reading, so a commit landing
            // between the read and the wait is not missed.
            let written = self.bus.written.clone();
            let notified = written.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let batch = self
                .bus
                .read_from(&self.topic, self.position, READ_BATCH)
                .await?;
            if let Some(last) = batch.last() {
                self.position = last.offset + 1;
                self.buffer.extend(batch);
                continue;
            }
            let _ = tokio::time::timeout(Duration::from_millis(POLL_INTERVAL_MS), notified).await;
        }
    }

    /// Marks `delivery` and everything before it done for this group. The
    /// stored offset never moves back.
    pub async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        if delivery.topic != self.topic {
            return Err(BusError::Fatal(format!(
                "commit of topic {} on a consumer of {}",
                delivery.topic, self.topic
            )));
        }
        let kind = WriteKind::Commit {
            group: self.group.clone(),
            topic: self.topic.clone(),
            next_offset: delivery.offset + 1,
        };
        self.bus.write(kind, self.bus.write_timeout).await.map(drop)
    }
}

/// Messages of `topic` after `group`'s committed offset: the topic's
/// head (its next offset) minus the commit, or minus the first retained
/// message when the group has not committed yet.
async fn lag(pool: &SqlitePool, group: &str, topic: &str) -> Result<PartitionLag, BusError> {
    let row = sqlx::query(
        r#"SELECT
             (SELECT next_offset FROM bus_topics WHERE topic = ?) AS head,
             (SELECT next_offset FROM bus_offsets WHERE group_id = ? AND topic = ?) AS committed,
             (SELECT MIN("offset") FROM bus_messages WHERE topic = ?) AS first"#,
    )
    .bind(topic)
    .bind(group)
    .bind(topic)
    .bind(topic)
    .fetch_one(pool)
    .await
    .map_err(unavailable)?;
    let head: i64 = row
        .try_get::<Option<i64>, _>("head")
        .map_err(fatal)?
        .unwrap_or(0);
    let committed: Option<i64> = row.try_get("committed").map_err(fatal)?;
    let first: Option<i64> = row.try_get("first").map_err(fatal)?;
    Ok(partition_lag(
        PARTITION,
        committed,
        first.unwrap_or(head),
        head,
    ))
}

async fn open_pool(path: &Path) -> Result<SqlitePool, BusError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| {
            BusError::Fatal(format!("create directory {}: {error}", parent.display()))
        })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(BUSY_TIMEOUT_SECS));
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await
        .map_err(|error| BusError::Fatal(format!("open {}: {error}", path.display())))?;
    sqlx::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .map_err(|error| BusError::Fatal(format!("create bus schema: {error}")))?;
    Ok(pool)
}

fn delivery_from_row(topic: &str, row: &SqliteRow) -> Result<Delivery, BusError> {
    let offset: i64 = row.try_get("offset").map_err(fatal)?;
    let headers: String = row.try_get("headers").map_err(fatal)?;
    let headers: Vec<(String, String)> = serde_json::from_str(&headers).map_err(|error| {
        BusError::Fatal(format!(
            "headers of {topic}@{offset} are not valid: {error}"
        ))
    })?;
    Ok(Delivery {
        topic: topic.to_owned(),
        partition: PARTITION,
        offset,
        message: BusMessage {
            key: row.try_get("key").map_err(fatal)?,
            payload: row.try_get("payload").map_err(fatal)?,
            headers,
        },
    })
}

/// I/O, a busy lock or a full disk: retrying later can succeed.
fn unavailable(error: sqlx::Error) -> BusError {
    BusError::Unavailable(format!("embedded bus: {error}"))
}

/// A row that does not have the shape this code wrote.
fn fatal(error: sqlx::Error) -> BusError {
    BusError::Fatal(format!("embedded bus: {error}"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn open_in(dir: &tempfile::TempDir) -> EmbeddedBus {
        let config = BusConfig {
            embedded_path: dir.path().join("nested/bus.sqlite"),
            ..BusConfig::default()
        };
        EmbeddedBus::open(&config).await.unwrap()
    }

    fn message(key: &str, body: &str) -> BusMessage {
        BusMessage {
            key: key.into(),
            payload: body.as_bytes().to_vec(),
            headers: vec![("provider".into(), "square".into())],
        }
    }

    async fn purge_all_before_now(bus: &EmbeddedBus) -> i64 {
        let kind = WriteKind::Purge {
            cutoff_ms: chrono::Utc::now().timestamp_millis() + 60_000,
            webhook_prefix: "kvitto.webhooks.".into(),
        };
        bus.write(kind, TIMEOUT).await.unwrap()
    }

    fn offsets(deliveries: &[Delivery]) -> Vec<i64> {
        deliveries.iter().map(|d| d.offset).collect()
    }

    #[tokio::test]
    async fn open_creates_missing_directories_and_reads_back_headers() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        bus.publish("t", &message("k", "one"), TIMEOUT)
            .await
            .unwrap();
        bus.check().await.unwrap();

        let all = bus.read_all("t", 10).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].message, message("k", "one"));
        assert_eq!((all[0].partition, all[0].offset), (0, 0));
        assert!(dir.path().join("nested/bus.sqlite").exists());
    }

    #[tokio::test]
    async fn every_connection_runs_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        let mut conn = bus.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(synchronous, 2, "2 is FULL");
    }

    #[tokio::test]
    async fn committed_offset_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        for i in 0..4 {
            bus.publish("t", &message("k", &i.to_string()), TIMEOUT)
                .await
                .unwrap();
        }
        let mut consumer = bus.consumer("g", "t").await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(consumer.next().await.unwrap());
        }
        consumer.commit(&seen[2]).await.unwrap();
        consumer.commit(&seen[0]).await.unwrap();

        let mut again = bus.consumer("g", "t").await.unwrap();
        assert_eq!(again.next().await.unwrap().offset, 3);
    }

    #[tokio::test]
    async fn lag_is_what_the_group_has_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        assert_eq!(lag(&bus.pool, "g", "t").await.unwrap().messages, 0);
        for i in 0..3 {
            bus.publish("t", &message("k", &i.to_string()), TIMEOUT)
                .await
                .unwrap();
        }
        assert_eq!(lag(&bus.pool, "g", "t").await.unwrap().messages, 3);

        let mut consumer = bus.consumer("g", "t").await.unwrap();
        let first = consumer.next().await.unwrap();
        assert_eq!(
            lag(&bus.pool, "g", "t").await.unwrap().messages,
            3,
            "read is not committed"
        );
        consumer.commit(&first).await.unwrap();
        assert_eq!(lag(&bus.pool, "g", "t").await.unwrap().messages, 2);
        assert_eq!(lag(&bus.pool, "other", "t").await.unwrap().messages, 3);
    }

    #[tokio::test]
    async fn commit_of_another_topic_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        bus.publish("a", &message("k", "x"), TIMEOUT).await.unwrap();
        let delivery = bus.read_all("a", 1).await.unwrap().remove(0);
        let mut consumer = bus.consumer("g", "b").await.unwrap();
        assert!(matches!(
            consumer.commit(&delivery).await,
            Err(BusError::Fatal(_))
        ));
    }

    #[tokio::test]
    async fn retention_keeps_uncommitted_webhooks_and_prunes_other_topics_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        let webhooks = "kvitto.webhooks.square";
        for i in 0..3 {
            bus.publish(webhooks, &message("k", &i.to_string()), TIMEOUT)
                .await
                .unwrap();
            bus.publish("kvitto.transactions", &message("k", "t"), TIMEOUT)
                .await
                .unwrap();
            bus.publish("kvitto.webhooks.stripe", &message("k", "s"), TIMEOUT)
                .await
                .unwrap();
        }
        let mut first = bus.consumer("one", webhooks).await.unwrap();
        let mut second = bus.consumer("two", webhooks).await.unwrap();
        let d0 = first.next().await.unwrap();
        let d1 = first.next().await.unwrap();
        first.commit(&d1).await.unwrap();
        let other = second.next().await.unwrap();
        second.commit(&other).await.unwrap();
        assert_eq!(d0.offset, 0);

        assert_eq!(purge_all_before_now(&bus).await, 1 + 3);

        assert_eq!(
            offsets(&bus.read_all(webhooks, 10).await.unwrap()),
            vec![1, 2]
        );
        assert!(
            bus.read_all("kvitto.transactions", 10)
                .await
                .unwrap()
                .is_empty()
        );
        let uncommitted = bus.read_all("kvitto.webhooks.stripe", 10).await.unwrap();
        assert_eq!(offsets(&uncommitted), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn offsets_do_not_repeat_after_retention_emptied_a_topic() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        bus.publish("kvitto.deadletter", &message("k", "a"), TIMEOUT)
            .await
            .unwrap();
        bus.publish("kvitto.deadletter", &message("k", "b"), TIMEOUT)
            .await
            .unwrap();
        purge_all_before_now(&bus).await;

        bus.publish("kvitto.deadletter", &message("k", "c"), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(
            offsets(&bus.read_all("kvitto.deadletter", 10).await.unwrap()),
            vec![2]
        );
    }

    #[tokio::test]
    async fn idle_consumer_wakes_on_a_publish_without_waiting_for_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open_in(&dir).await;
        let mut consumer = bus.consumer("g", "t").await.unwrap();
        let (received_tx, received_rx) = oneshot::channel();
        tokio::spawn(async move {
            let delivery = consumer.next().await;
            let _ = received_tx.send((delivery.map(|d| d.offset).ok(), Instant::now()));
        });
        tokio::time::sleep(Duration::from_millis(200)).await;

        bus.publish("t", &message("k", "wake"), TIMEOUT)
            .await
            .unwrap();
        let published_at = Instant::now();
        let (offset, received_at) = received_rx.await.unwrap();
        assert_eq!(offset, Some(0));
        let lag = received_at.saturating_duration_since(published_at);
        assert!(
            lag < Duration::from_millis(POLL_INTERVAL_MS / 2),
            "woke after {lag:?}"
        );
    }
}
