//! Kafka consumers: the group consumer the pipeline reads with, and the
//! group-less reader behind `read_all`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{client_config, fatal, unavailable};
use crate::bus::lag::{LagReporter, PartitionLag, partition_lag};
use crate::bus::{BusError, BusMessage, Delivery};
use crate::providers::ProviderKind;

/// One consumer of one topic in one group. Offsets reach the group only
/// through [`KafkaConsumer::commit`]; auto-commit then sends them in the
/// background, and at the latest when the consumer is dropped.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
    topic: String,
    /// The highest offset stored per partition, so a late commit of an
    /// earlier message never moves the group back.
    stored: HashMap<i32, i64>,
    lag: Option<LagReporter>,
}

/// How often a consumer refreshes topic metadata.
const METADATA_REFRESH_MS: u64 = 5_000;
/// How long one lag measurement waits for each broker answer.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

impl KafkaConsumer {
    pub(super) fn subscribe(
        brokers: &str,
        group: &str,
        topic: &str,
        session_timeout_ms: u64,
    ) -> Result<Self, BusError> {
        let consumer: StreamConsumer = client_config(brokers)
            .set("group.id", group)
            .set("session.timeout.ms", session_timeout_ms.to_string())
            // A subscribed topic the cluster did not list yet (just created)
            // is looked for again at this interval, not the default 5 min.
            .set(
                "topic.metadata.refresh.interval.ms",
                METADATA_REFRESH_MS.to_string(),
            )
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(fatal)?;
        consumer.subscribe(&[topic]).map_err(fatal)?;
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            stored: HashMap::new(),
            lag: None,
        })
    }

    /// Reports this consumer's lag as `provider`'s until it is dropped.
    pub fn report_lag(&mut self, provider: ProviderKind) {
        let consumer = Arc::downgrade(&self.consumer);
        self.lag = Some(LagReporter::spawn(provider, move || {
            measure_lag(consumer.clone())
        }));
    }

    /// The next message, waiting as long as it takes for one to arrive.
    /// A broker error is returned, not swallowed; the consumer stays usable
    /// and the next call resumes where this one stopped.
    pub async fn next(&mut self) -> Result<Delivery, BusError> {
        match self.consumer.recv().await {
            Ok(message) => Ok(delivery_from(&message)),
            Err(error @ KafkaError::MessageConsumptionFatal(_)) => Err(fatal(error)),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Stores `delivery.offset + 1` for auto-commit to send: this message and
    /// everything before it in its partition are done.
    pub fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        if delivery.topic != self.topic {
            return Err(BusError::Fatal(format!(
                "commit of topic {} on a consumer of {}",
                delivery.topic, self.topic
            )));
        }
        if self
            .stored
            .get(&delivery.partition)
            .is_some_and(|&done| done >= delivery.offset)
        {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &delivery.topic,
                delivery.partition,
                Offset::Offset(delivery.offset + 1),
            )
            .map_err(fatal)?;
        match self.consumer.store_offsets(&offsets) {
            Ok(()) => {
                self.stored.insert(delivery.partition, delivery.offset);
                Ok(())
            }
            // The partition was revoked by a rebalance: its new owner reads
            // the message again from the group's last commit.
            Err(error @ KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                Err(unavailable(error))
            }
            Err(error) => Err(fatal(error)),
        }
    }

    /// Commits the stored offsets now and waits for the broker's answer.
    pub async fn flush_commits(&mut self) -> Result<(), BusError> {
        let consumer = self.consumer.clone();
        // A synchronous commit blocks its thread until the broker answers.
        let result =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await
                .map_err(|error| BusError::Fatal(format!("commit task failed: {error}")))?;
        match result {
            Ok(()) => Ok(()),
            // Nothing was stored since the last commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }
}

/// The lag of every partition assigned to `consumer`, asked of the brokers:
/// the group's committed offsets (OffsetFetch) and each partition's
/// watermarks (ListOffsets), the numbers `kafka-consumer-groups` shows.
///
/// librdkafka's statistics (`statistics.interval.ms`) also carry a
/// per-partition `consumer_lag`, but from what this client last saw: the end
/// offset from its own fetch responses, which stop while the worker retries
/// and the prefetch queue is full, and -1 until the first fetch and commit.
/// Those numbers would also need a custom client context and a parse of the
/// whole statistics document. The two requests asked here are the ones every
/// consumer already depends on (the broker answers them to start a
/// consumer, and `read_all` uses the watermarks), so they work on tansu as
/// on Kafka, at one request per partition every few seconds.
async fn measure_lag(consumer: Weak<StreamConsumer>) -> Result<Vec<PartitionLag>, BusError> {
    let Some(consumer) = consumer.upgrade() else {
        return Ok(Vec::new());
    };
    // Both requests block their thread until the broker answers.
    tokio::task::spawn_blocking(move || -> Result<Vec<PartitionLag>, BusError> {
        let committed = consumer.committed(LAG_QUERY_TIMEOUT).map_err(unavailable)?;
        committed
            .elements()
            .iter()
            .map(|element| {
                let (low, high) = consumer
                    .fetch_watermarks(element.topic(), element.partition(), LAG_QUERY_TIMEOUT)
                    .map_err(unavailable)?;
                let committed = match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                };
                Ok(partition_lag(element.partition(), committed, low, high))
            })
            .collect()
    })
    .await
    .map_err(|error| BusError::Fatal(format!("lag task failed: {error}")))?
}

/// Reads `topic` from the beginning of every partition without joining a
/// group, until each partition's end as it was when the read began, `max`
/// messages, or `timeout`, whichever comes first.
pub(super) async fn read_all(
    brokers: &str,
    topic: &str,
    max: usize,
    timeout: Duration,
) -> Result<Vec<Delivery>, BusError> {
    let deadline = tokio::time::Instant::now() + timeout;
    // librdkafka refuses `assign` without a group id; this one is never
    // joined (assign, not subscribe) and nothing is committed to it.
    let throwaway_group = format!("kvitto-reader-{}", uuid::Uuid::new_v4().simple());
    let reader: StreamConsumer = client_config(brokers)
        .set("group.id", throwaway_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(fatal)?;
    let reader = Arc::new(reader);
    // partition -> last offset to read
    let mut remaining = partition_ends(reader.clone(), topic, timeout).await?;
    let mut assignment = TopicPartitionList::new();
    for partition in remaining.keys() {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(fatal)?;
    }
    reader.assign(&assignment).map_err(fatal)?;

    let mut deliveries = Vec::new();
    while !remaining.is_empty() && deliveries.len() < max {
        let Ok(received) = tokio::time::timeout_at(deadline, reader.recv()).await else {
            break;
        };
        match received {
            Ok(message) => {
                let delivery = delivery_from(&message);
                if remaining
                    .get(&delivery.partition)
                    .is_some_and(|&end| delivery.offset >= end)
                {
                    remaining.remove(&delivery.partition);
                }
                deliveries.push(delivery);
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                remaining.remove(&partition);
            }
            Err(error) => return Err(unavailable(error)),
        }
    }
    deliveries.sort_by_key(|delivery| (delivery.partition, delivery.offset));
    Ok(deliveries)
}

/// The last offset of every non-empty partition of `topic`; none when the
/// topic does not exist.
async fn partition_ends(
    reader: Arc<StreamConsumer>,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<i32, i64>, BusError> {
    let topic = topic.to_owned();
    // Metadata and watermark requests block their thread.
    tokio::task::spawn_blocking(move || {
        let metadata = reader
            .fetch_metadata(Some(&topic), timeout)
            .map_err(unavailable)?;
        let mut ends = HashMap::new();
        for found in metadata
            .topics()
            .iter()
            .filter(|found| found.error().is_none())
        {
            for partition in found.partitions() {
                let (low, high) = reader
                    .fetch_watermarks(&topic, partition.id(), timeout)
                    .map_err(unavailable)?;
                if high > low {
                    ends.insert(partition.id(), high - 1);
                }
            }
        }
        Ok(ends)
    })
    .await
    .map_err(|error| BusError::Fatal(format!("metadata task failed: {error}")))?
}

/// Copies a message out of rdkafka's buffer. Keys and header values that are
/// not UTF-8 (written by another producer) are decoded lossily.
fn delivery_from(message: &BorrowedMessage<'_>) -> Delivery {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    let value = header
                        .value
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    (header.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    Delivery {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        message: BusMessage {
            key: message
                .key()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned(),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        },
    }
}
