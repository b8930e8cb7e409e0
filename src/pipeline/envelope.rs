//! The events kvitto publishes: CloudEvents 1.0 in structured JSON mode.
//!
//! Every event's `id` is stable (a transaction event is identified by the
//! transaction id and revision, a dead letter by the kvitto event id), so
//! a consumer can deduplicate the redeliveries that at-least-once allows.
//! Schemas are documented in `docs/topics.md`.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::{BusMessage, Delivery};
use crate::canonical::Transaction;
use crate::store::format_time;

pub const TRANSACTION_EVENT_TYPE: &str = "se.kvitto.transaction.v1";
pub const DEADLETTER_EVENT_TYPE: &str = "se.kvitto.deadletter.v1";
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";

/// Bus header carrying kvitto's id of the webhook event.
pub const EVENT_ID_HEADER: &str = "kvitto-event-id";
pub const PROVIDER_HEADER: &str = "kvitto-provider";
pub const INTEGRATION_HEADER: &str = "kvitto-integration";
pub const PROVIDER_EVENT_ID_HEADER: &str = "kvitto-provider-event-id";
pub const RECEIVED_AT_HEADER: &str = "kvitto-received-at";
pub const QUERY_HEADER: &str = "kvitto-query";

#[derive(Serialize)]
struct CloudEvent<'a, T: Serialize> {
    specversion: &'static str,
    id: String,
    source: String,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: T,
}

/// The `kvitto.transactions` message for one revision of a transaction.
pub fn transaction_message(transaction: &Transaction) -> BusMessage {
    let id = transaction.id.to_string();
    let event = CloudEvent {
        specversion: "1.0",
        id: format!("{id}:{}", transaction.revision),
        source: format!(
            "/kvitto/{}/{}",
            transaction.provider, transaction.integration_id
        ),
        kind: TRANSACTION_EVENT_TYPE,
        subject: &id,
        time: format_time(transaction.updated_at),
        datacontenttype: "application/json",
        data: transaction,
    };
    BusMessage {
        key: id.clone(),
        payload: serde_json::to_vec(&event).expect("a transaction always serializes"),
        headers: vec![
            ("content-type".into(), CLOUDEVENTS_CONTENT_TYPE.into()),
            ("ce_id".into(), event.id.clone()),
            ("ce_type".into(), TRANSACTION_EVENT_TYPE.into()),
        ],
    }
}

/// What a dead letter says about the event it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event_id: String,
    pub provider: String,
    pub integration_id: Option<String>,
    pub provider_event_id: Option<String>,
    /// Bounded reason (`undecodable`, `attempts_exhausted`, ...).
    pub reason: String,
    /// What went wrong, in words. Never holds secrets: it is made from
    /// decode and API errors, which carry none.
    pub detail: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// The original bus headers (kvitto's and the kept provider headers).
    pub headers: Vec<(String, String)>,
    /// The original body, base64, so a replay is byte-exact.
    pub body_base64: String,
    pub deadlettered_at: String,
}

/// Namespace of the ids given to messages that came without kvitto's event
/// id (feedback written to its topic directly).
const UNLABELLED_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6b76_6974_746f_4000_8000_756e_6c61_6265);

/// A message without an event id is named by its topic and bytes: the same
/// message dead-lettered again, or replayed and refused again, keeps its id.
fn unlabelled_event_id(topic: &str, payload: &[u8]) -> String {
    let mut name = Vec::with_capacity(topic.len() + 1 + payload.len());
    name.extend_from_slice(topic.as_bytes());
    name.push(0);
    name.extend_from_slice(payload);
    uuid::Uuid::new_v5(&UNLABELLED_NAMESPACE, &name).to_string()
}

impl DeadLetter {
    pub fn new(delivery: &Delivery, reason: &str, detail: String, now: DateTime<Utc>) -> Self {
        let message = &delivery.message;
        let event_id = match message.header(EVENT_ID_HEADER) {
            Some(id) => id.to_string(),
            None => unlabelled_event_id(&delivery.topic, &message.payload),
        };
        DeadLetter {
            event_id,
            provider: message
                .header(PROVIDER_HEADER)
                .unwrap_or_default()
                .to_string(),
            integration_id: message.header(INTEGRATION_HEADER).map(str::to_string),
            provider_event_id: message.header(PROVIDER_EVENT_ID_HEADER).map(str::to_string),
            reason: reason.to_string(),
            detail,
            source_topic: delivery.topic.clone(),
            source_partition: delivery.partition,
            source_offset: delivery.offset,
            headers: message.headers.clone(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(&message.payload),
            deadlettered_at: format_time(now),
        }
    }

    pub fn message(&self, key: &str) -> BusMessage {
        let event = CloudEvent {
            specversion: "1.0",
            id: format!("{}:deadletter", self.event_id),
            source: format!("/kvitto/{}", self.provider),
            kind: DEADLETTER_EVENT_TYPE,
            subject: &self.event_id,
            time: self.deadlettered_at.clone(),
            datacontenttype: "application/json",
            data: self,
        };
        BusMessage {
            key: key.to_string(),
            payload: serde_json::to_vec(&event).expect("a dead letter always serializes"),
            headers: vec![
                ("content-type".into(), CLOUDEVENTS_CONTENT_TYPE.into()),
                ("ce_type".into(), DEADLETTER_EVENT_TYPE.into()),
                (EVENT_ID_HEADER.into(), self.event_id.clone()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(offset: i64, payload: &[u8], headers: Vec<(String, String)>) -> Delivery {
        Delivery {
            topic: "kvitto.feedback".into(),
            partition: 0,
            offset,
            message: BusMessage {
                key: "k".into(),
                payload: payload.to_vec(),
                headers,
            },
        }
    }

    #[test]
    fn a_message_without_an_event_id_is_named_by_its_bytes() {
        let now = Utc::now();
        let first = DeadLetter::new(&delivery(1, b"{not json", vec![]), "x", String::new(), now);
        let again = DeadLetter::new(&delivery(9, b"{not json", vec![]), "x", String::new(), now);
        let other = DeadLetter::new(&delivery(2, b"[]", vec![]), "x", String::new(), now);
        assert!(uuid::Uuid::parse_str(&first.event_id).is_ok());
        assert_eq!(first.event_id, again.event_id);
        assert_ne!(first.event_id, other.event_id);
        let labelled = delivery(3, b"[]", vec![(EVENT_ID_HEADER.into(), "evt-1".into())]);
        let letter = DeadLetter::new(&labelled, "x", String::new(), now);
        assert_eq!(letter.event_id, "evt-1");
    }
}
