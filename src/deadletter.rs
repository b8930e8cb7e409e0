//! Dead letters, read back and replayed (`kvitto deadletter ...`).
//!
//! A replay writes the original message (its exact body and bus headers,
//! including the stable kvitto event id) back to the topic it came from, so
//! the pipeline processes it as if it had just arrived. That makes a replay
//! idempotent: an event that was processed in the meantime, or replayed
//! twice, is found by deduplication and changes nothing.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::bus::{Bus, BusError, BusMessage};
use crate::config::BusConfig;
use crate::pipeline::envelope::DeadLetter;

/// How long reading the dead-letter topic may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most dead letters read in one go.
const MAX_LETTERS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("dead letter {event_id} holds a body that is not base64")]
    CorruptBody { event_id: String },
}

/// A dead letter with the bus key its original message had.
#[derive(Debug, Clone)]
pub struct StoredLetter {
    pub key: String,
    pub letter: DeadLetter,
}

/// Which dead letters to act on; an empty filter matches all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub provider: Option<String>,
    pub reason: Option<String>,
    pub event_id: Option<String>,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.provider.as_ref().is_none_or(|p| *p == letter.provider)
            && self.reason.as_ref().is_none_or(|r| *r == letter.reason)
            && self
                .event_id
                .as_ref()
                .is_none_or(|id| *id == letter.event_id)
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: DeadLetter,
}

/// The dead letters matching `filter`, oldest first, one per event (the
/// latest, when an event was dead-lettered more than once). Messages on the
/// topic that are not dead letters are skipped.
pub async fn list(
    bus: &Bus,
    config: &BusConfig,
    filter: &Filter,
) -> Result<Vec<StoredLetter>, DeadLetterError> {
    let deliveries = bus
        .read_all(&config.deadletter_topic(), MAX_LETTERS, READ_TIMEOUT)
        .await?;
    let mut letters: Vec<StoredLetter> = Vec::new();
    for delivery in deliveries {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&delivery.message.payload) else {
            continue;
        };
        if !filter.matches(&envelope.data) {
            continue;
        }
        letters.retain(|stored| stored.letter.event_id != envelope.data.event_id);
        letters.push(StoredLetter {
            key: delivery.message.key,
            letter: envelope.data,
        });
    }
    Ok(letters)
}

/// Writes each letter's original message back to its source topic.
pub async fn replay(
    bus: &Bus,
    letters: &[StoredLetter],
    timeout: Duration,
) -> Result<usize, DeadLetterError> {
    for stored in letters {
        let letter = &stored.letter;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&letter.body_base64)
            .map_err(|_| DeadLetterError::CorruptBody {
                event_id: letter.event_id.clone(),
            })?;
        let message = BusMessage {
            key: stored.key.clone(),
            payload,
            headers: letter.headers.clone(),
        };
        bus.publish(&letter.source_topic, &message, timeout).await?;
    }
    Ok(letters.len())
}
