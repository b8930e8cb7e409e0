//! The bus: Kafka through rdkafka, or the embedded durable bus when no broker
//! is configured. Both keep the same contract, so the rest of kvitto cannot
//! tell them apart:
//!
//! - [`Bus::publish`] returns only once the message is durable (Kafka: the
//!   delivery report of an idempotent producer with `acks=all`; embedded: the
//!   SQLite transaction committed with `synchronous=FULL`). Any error means
//!   the message may not be stored and the caller must not acknowledge it.
//! - Messages with the same key keep their order.
//! - Delivery is at least once: a consumer sees a message again until it
//!   has been committed with [`Consumer::commit`], which the pipeline calls
//!   only after the message's effects are durable.

pub mod embedded;
pub mod kafka;
pub mod lag;

use std::time::Duration;

use crate::config::BusConfig;
use crate::providers::ProviderKind;

/// A message as written to, and read back from, the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// Messages with the same key keep their order.
    pub key: String,
    pub payload: Vec<u8>,
    /// Name/value pairs carried beside the payload (Kafka headers).
    pub headers: Vec<(String, String)>,
}

impl BusMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A message read from a topic, with the position needed to commit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub message: BusMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus could not confirm the write or read in time; nothing can be
    /// assumed stored. Retry later (ingress answers 503).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A misconfiguration or an internal failure that retrying will not mend.
    #[error("bus error: {0}")]
    Fatal(String),
}

/// A handle to the bus, cheap to clone and shared by every part of kvitto.
#[derive(Clone)]
pub enum Bus {
    Kafka(kafka::KafkaBus),
    Embedded(embedded::EmbeddedBus),
}

impl Bus {
    /// Connects to Kafka (creating missing topics) or opens the embedded bus.
    pub async fn connect(config: &BusConfig, topics: &[String]) -> Result<Bus, BusError> {
        if config.is_kafka() {
            Ok(Bus::Kafka(kafka::KafkaBus::connect(config, topics).await?))
        } else {
            Ok(Bus::Embedded(embedded::EmbeddedBus::open(config).await?))
        }
    }

    /// Writes a message and returns once it is durable, or fails within
    /// `timeout`.
    pub async fn publish(
        &self,
        topic: &str,
        message: &BusMessage,
        timeout: Duration,
    ) -> Result<(), BusError> {
        match self {
            Bus::Kafka(bus) => bus.publish(topic, message, timeout).await,
            Bus::Embedded(bus) => bus.publish(topic, message, timeout).await,
        }
    }

    /// Joins `group` on `topic`; the consumer starts after the group's last
    /// committed position (or at the beginning).
    pub async fn consumer(&self, group: &str, topic: &str) -> Result<Consumer, BusError> {
        match self {
            Bus::Kafka(bus) => Ok(Consumer::Kafka(bus.consumer(group, topic).await?)),
            Bus::Embedded(bus) => Ok(Consumer::Embedded(bus.consumer(group, topic).await?)),
        }
    }

    /// Readiness: can the bus take writes now?
    pub async fn check(&self) -> Result<(), BusError> {
        match self {
            Bus::Kafka(bus) => bus.check().await,
            Bus::Embedded(bus) => bus.check().await,
        }
    }

    /// Waits for every outstanding write to be confirmed (shutdown).
    pub async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        match self {
            Bus::Kafka(bus) => bus.flush(timeout).await,
            Bus::Embedded(_) => Ok(()),
        }
    }

    /// Reads up to `max` messages of `topic` from the beginning, without a
    /// consumer group (tests, `kvitto deadletter list`).
    pub async fn read_all(
        &self,
        topic: &str,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        match self {
            Bus::Kafka(bus) => bus.read_all(topic, max, timeout).await,
            Bus::Embedded(bus) => bus.read_all(topic, max).await,
        }
    }
}

/// One consumer of one topic in one group.
pub enum Consumer {
    Kafka(kafka::KafkaConsumer),
    Embedded(embedded::EmbeddedConsumer),
}

impl Consumer {
    /// The next message, waiting as long as it takes for one to arrive.
    pub async fn next(&mut self) -> Result<Delivery, BusError> {
        match self {
            Consumer::Kafka(consumer) => consumer.next().await,
            Consumer::Embedded(consumer) => consumer.next().await,
        }
    }

    /// Marks `delivery` (and everything before it in its partition) as done.
    /// Call only once its effects are durable.
    pub async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        match self {
            Consumer::Kafka(consumer) => consumer.commit(delivery),
            Consumer::Embedded(consumer) => consumer.commit(delivery).await,
        }
    }

    /// Keeps `kvitto_consumer_lag_messages` up to date for `provider` from
    /// now until the consumer is dropped (see [`lag`]).
    pub fn report_lag(&mut self, provider: ProviderKind) {
        match self {
            Consumer::Kafka(consumer) => consumer.report_lag(provider),
            Consumer::Embedded(consumer) => consumer.report_lag(provider),
        }
    }

    /// Pushes committed positions out now (shutdown).
    pub async fn flush_commits(&mut self) -> Result<(), BusError> {
        match self {
            Consumer::Kafka(consumer) => consumer.flush_commits().await,
            Consumer::Embedded(_) => Ok(()),
        }
    }
}
