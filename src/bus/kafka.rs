//! The bus on Kafka, through rdkafka.
//!
//! - **Durable publish.** The producer is idempotent with `acks=all`, and
//!   [`KafkaBus::publish`] returns only once the broker's delivery report
//!   said every in-sync replica has the message. Idempotence also keeps
//!   librdkafka's internal retries from duplicating or reordering messages.
//! - **Order.** Messages with the same key land on the same partition
//!   (`murmur2_random`, the Java client's partitioner, so other producers
//!   agree) and a partition keeps its order.
//! - **At least once.** Consumers auto-commit, but only offsets stored with
//!   [`KafkaConsumer::commit`] (`enable.auto.offset.store=false`), which the
//!   pipeline calls once a message's effects are durable. A message that was
//!   read and not committed is read again after a restart or rebalance.

mod consumer;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::info;

pub use self::consumer::KafkaConsumer;
use super::{BusError, BusMessage, Delivery};
use crate::config::BusConfig;
use crate::telemetry::throttle::{Throttle, ThrottleSite};

/// How long `linger.ms` lets the producer gather a batch: small, because a
/// webhook's answer waits for it.
const LINGER_MS: u64 = 5;
/// How long a readiness check waits for the cluster's metadata.
const CHECK_TIMEOUT_MS: u64 = 2_000;

static PRODUCER_REPLACED_LOG: Throttle = Throttle::new(ThrottleSite::ProducerReplaced, 60);
static PRODUCER_REPLACE_FAILED_LOG: Throttle = Throttle::new(ThrottleSite::ProducerReplaced, 60);

/// A handle to the Kafka producer, cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    /// Replaced when it gets into a state it cannot leave by itself (see
    /// [`needs_new_producer`]); every clone sees the replacement.
    producer: Arc<RwLock<FutureProducer>>,
    producer_config: ClientConfig,
    brokers: String,
    session_timeout_ms: u64,
}

impl KafkaBus {
    /// Creates the missing topics among `topics`, then the producer. The
    /// producer connects lazily, so an unreachable broker surfaces at the
    /// first publish (or here, when there are topics to create).
    pub async fn connect(config: &BusConfig, topics: &[String]) -> Result<Self, BusError> {
        let timeout = Duration::from_millis(config.publish_timeout_ms);
        if !topics.is_empty() {
            create_topics(config, topics, timeout).await?;
        }
        let mut producer_config = client_config(&config.brokers);
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", config.publish_timeout_ms.to_string())
            .set("linger.ms", LINGER_MS.to_string())
            .set("partitioner", "murmur2_random");
        let producer = create_producer(&producer_config)?;
        Ok(KafkaBus {
            producer: Arc::new(RwLock::new(producer)),
            producer_config,
            brokers: config.brokers.clone(),
            session_timeout_ms: config.session_timeout_ms,
        })
    }

    /// Sends a message and waits for its delivery report, at most `timeout`.
    pub async fn publish(
        &self,
        topic: &str,
        message: &BusMessage,
        timeout: Duration,
    ) -> Result<(), BusError> {
        let headers = message.headers.iter().fold(
            OwnedHeaders::new_with_capacity(message.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        );
        let record = FutureRecord::to(topic)
            .key(&message.key)
            .payload(&message.payload)
            .headers(headers);
        // `send` waits up to `timeout` for room in the local queue, then for
        // the delivery report, which `message.timeout.ms` bounds; the outer
        // timeout holds the caller to `timeout` whatever the configuration.
        let producer = self.producer();
        match tokio::time::timeout(timeout, producer.send(record, timeout)).await {
            Ok(Ok(_delivered)) => Ok(()),
            Ok(Err((error, _message))) => {
                if needs_new_producer(&error) {
                    self.replace_producer(&producer);
                }
                Err(classify_produce_error(error))
            }
            Err(_) => Err(BusError::Unavailable(format!(
                "no delivery report within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .expect("producer lock poisoned")
            .clone()
    }

    /// Swaps in a fresh producer (a new producer id, sequence numbers from
    /// zero) unless another caller already replaced `failed`. Messages still
    /// in flight on the old one finish or fail on their own; their webhooks
    /// get 503 and are retried by the provider.
    fn replace_producer(&self, failed: &FutureProducer) {
        let mut current = self.producer.write().expect("producer lock poisoned");
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match create_producer(&self.producer_config) {
            // A broker that keeps fencing producers would otherwise log one
            // line per webhook: both lines are throttled.
            Ok(fresh) => {
                if let Some(suppressed) = PRODUCER_REPLACED_LOG.allow() {
                    tracing::warn!(
                        suppressed,
                        "kafka producer replaced after an error it cannot recover from"
                    );
                }
                *current = fresh;
            }
            Err(error) => {
                if let Some(suppressed) = PRODUCER_REPLACE_FAILED_LOG.allow() {
                    tracing::error!(%error, suppressed, "replacing the kafka producer failed");
                }
            }
        }
    }

    /// Joins `group` on `topic`.
    pub async fn consumer(&self, group: &str, topic: &str) -> Result<KafkaConsumer, BusError> {
        KafkaConsumer::subscribe(&self.brokers, group, topic, self.session_timeout_ms)
    }

    /// Readiness: the cluster answers a metadata request in time.
    pub async fn check(&self) -> Result<(), BusError> {
        let producer = self.producer();
        let timeout = Duration::from_millis(CHECK_TIMEOUT_MS);
        // rdkafka's metadata call blocks its thread.
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout))
            .await
            .map_err(|error| BusError::Fatal(format!("metadata task failed: {error}")))?
            .map(drop)
            .map_err(|error| BusError::Unavailable(format!("kafka metadata: {error}")))
    }

    /// Waits for every message in flight to get its delivery report.
    pub async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|error| BusError::Fatal(format!("flush task failed: {error}")))?
            .map_err(|error| BusError::Unavailable(format!("kafka flush: {error}")))
    }

    /// Reads up to `max` messages of `topic` from the beginning of every
    /// partition, without a consumer group.
    pub async fn read_all(
        &self,
        topic: &str,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        consumer::read_all(&self.brokers, topic, max, timeout).await
    }
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "kvitto");
    config
}

async fn create_topics(
    config: &BusConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = client_config(&config.brokers)
        .create()
        .map_err(|error| BusError::Fatal(format!("create kafka admin client: {error}")))?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|topic| {
            let replication = TopicReplication::Fixed(config.replication_factor);
            NewTopic::new(topic, config.partitions, replication)
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results =
        match tokio::time::timeout(timeout, admin.create_topics(&new_topics, &options)).await {
            Ok(Ok(results)) => results,
            Ok(Err(error)) => return Err(classify_admin_error(error)),
            Err(_) => {
                return Err(BusError::Unavailable(format!(
                    "topics not created within {} ms",
                    timeout.as_millis()
                )));
            }
        };
    for result in results {
        match result {
            Ok(topic) => info!(topic, "created kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(classify_topic_error(&topic, code)),
        }
    }
    Ok(())
}

fn create_producer(config: &ClientConfig) -> Result<FutureProducer, BusError> {
    config
        .create()
        .map_err(|error| BusError::Fatal(format!("create kafka producer: {error}")))
}

/// Errors after which the idempotent producer will not deliver again: a
/// fatal idempotence error (librdkafka requires a new instance), a broken
/// sequence or epoch, or a broker that lost the producer's state and answers
/// every request with an unknown error or fences the producer (both seen on
/// tansu after a connection loss).
fn needs_new_producer(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error,
        KafkaError::MessageProduction(
            Code::Fatal
                | Code::OutOfOrderSequenceNumber
                | Code::UnknownProducerId
                | Code::InvalidProducerEpoch
                | Code::ProducerFenced
                | Code::Unknown
        )
    )
}

/// Maps a failed delivery to the bus contract: `Unavailable` when a later
/// attempt can succeed (the provider is told 503 and retries), `Fatal` when
/// it cannot.
fn classify_produce_error(error: KafkaError) -> BusError {
    use RDKafkaErrorCode as Code;
    match error {
        // The local queue stayed full for the whole timeout: the brokers are
        // not keeping up with the webhooks coming in.
        KafkaError::MessageProduction(Code::QueueFull) => unavailable(error),
        // No acknowledgement from all in-sync replicas before
        // `message.timeout.ms`: brokers down, unreachable or partitioned.
        KafkaError::MessageProduction(Code::MessageTimedOut) => unavailable(error),
        // Leadership moving, too few in-sync replicas, a dropped connection:
        // librdkafka has retried already, and a later attempt can succeed.
        KafkaError::MessageProduction(
            Code::NotEnoughReplicas
            | Code::NotEnoughReplicasAfterAppend
            | Code::LeaderNotAvailable
            | Code::NotLeaderForPartition
            | Code::RequestTimedOut
            | Code::NetworkException
            | Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::Resolve,
        ) => unavailable(error),
        // The message or the topic is wrong, or access is denied: sending
        // the same message again fails the same way. Topics are created at
        // connect, so a missing one means a wrong prefix or a deleted topic.
        KafkaError::MessageProduction(
            Code::MessageSizeTooLarge
            | Code::InvalidMessageSize
            | Code::InvalidMessage
            | Code::InvalidRecord
            | Code::InvalidTopic
            | Code::UnknownTopic
            | Code::UnknownPartition
            | Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed,
        ) => fatal(error),
        // The idempotent producer hit a fatal error (sequence gap, fenced):
        // this instance refuses every further message, so `publish` swaps in
        // a new producer and the provider's retry goes through it.
        KafkaError::MessageProduction(Code::Fatal | Code::OutOfOrderSequenceNumber) => {
            unavailable(error)
        }
        // Anything else from the broker: assume transient, so the provider
        // retries rather than kvitto dropping the event.
        KafkaError::MessageProduction(_) => unavailable(error),
        // The producer is being dropped at shutdown.
        KafkaError::Canceled => unavailable(error),
        // Client-side failures (bad header bytes, configuration): a bug.
        _ => fatal(error),
    }
}

/// Topic creation failed as a whole (before the broker answered per topic).
fn classify_admin_error(error: KafkaError) -> BusError {
    match error {
        // No broker answered in time.
        KafkaError::AdminOp(
            RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown,
        ) => unavailable(error),
        _ => fatal(error),
    }
}

/// The broker refused to create one topic.
fn classify_topic_error(topic: &str, code: RDKafkaErrorCode) -> BusError {
    let reason = format!("create topic {topic}: {code}");
    match code {
        // The controller is busy or moving; creation can be retried.
        RDKafkaErrorCode::RequestTimedOut
        | RDKafkaErrorCode::OperationTimedOut
        | RDKafkaErrorCode::NotCoordinator
        | RDKafkaErrorCode::CoordinatorNotAvailable => BusError::Unavailable(reason),
        // Bad partition count or replication factor, a policy, no rights.
        _ => BusError::Fatal(reason),
    }
}

fn unavailable(error: KafkaError) -> BusError {
    BusError::Unavailable(format!("kafka: {error}"))
}

fn fatal(error: KafkaError) -> BusError {
    BusError::Fatal(format!("kafka: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_trouble_is_unavailable_and_bad_messages_are_fatal() {
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let producer_fenced = KafkaError::MessageProduction(RDKafkaErrorCode::Fatal);
        assert!(matches!(
            classify_produce_error(timed_out),
            BusError::Unavailable(_)
        ));
        assert!(matches!(
            classify_produce_error(too_large),
            BusError::Fatal(_)
        ));
        // The instance is replaced, so the provider's retry can succeed.
        assert!(needs_new_producer(&producer_fenced));
        assert!(matches!(
            classify_produce_error(producer_fenced),
            BusError::Unavailable(_)
        ));
        assert!(!needs_new_producer(&KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut
        )));
        assert!(matches!(
            classify_produce_error(KafkaError::Canceled),
            BusError::Unavailable(_)
        ));
    }

    #[test]
    fn unknown_broker_errors_are_treated_as_transient() {
        let odd = KafkaError::MessageProduction(RDKafkaErrorCode::CoordinatorLoadInProgress);
        assert!(matches!(
            classify_produce_error(odd),
            BusError::Unavailable(_)
        ));
    }

    #[test]
    fn topic_creation_timeout_is_unavailable_and_bad_replication_is_fatal() {
        let slow = classify_topic_error("t", RDKafkaErrorCode::RequestTimedOut);
        let bad = classify_topic_error("t", RDKafkaErrorCode::InvalidReplicationFactor);
        assert!(matches!(slow, BusError::Unavailable(_)));
        assert!(matches!(bad, BusError::Fatal(ref reason) if reason.contains("create topic t")));
    }
}
