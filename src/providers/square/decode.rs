//! Square payload decoding: turns a notification into what kvitto acts on.
//!
//! A Square notification is an envelope (`merchant_id`, `type`, `event_id`,
//! `created_at`) around `data{type, id, object}`; for `payment.created` and
//! `payment.updated` the object is `{payment: Payment}` (Square Webhooks
//! reference, "payment.created"). The same [`Payment`] shape is what
//! `GET /v2/payments/{id}` answers, so `api.rs` reuses it.
//!
//! Guarantee: every input, however malformed, gives a value or a
//! [`DecodeError`]; amounts are Square's integer minor units and never pass
//! through a float; `source_version` is the payment's `updated_at` in
//! milliseconds, because Square updates payments in place and only that
//! timestamp orders their states.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::canonical::PaymentState;
use crate::money;
use crate::providers::{
    Claim, DecodeError, DecodedEvent, EnvelopeInfo, EventAction, RawDelivery, WebhookRequest,
};

const TEST_NOTIFICATION_TYPE: &str = "webhooks.test_notification";
const PURCHASE_TYPES: [&str; 2] = ["payment.created", "payment.updated"];

/// What ingress reads: only the ids, so a payment ingress cannot judge yet
/// does not turn the delivery away before it is durable.
#[derive(Debug, Deserialize)]
struct EnvelopeHead {
    event_id: String,
    #[serde(default)]
    data: Option<DataHead>,
}

#[derive(Debug, Deserialize)]
struct DataHead {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: Option<EventData>,
}

#[derive(Debug, Deserialize)]
struct EventData {
    #[serde(default)]
    object: Option<EventObject>,
}

#[derive(Debug, Deserialize)]
struct EventObject {
    #[serde(default)]
    payment: Option<Payment>,
}

/// A Square `Payment`, as far as kvitto reads it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Payment {
    pub id: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub amount_money: Option<Money>,
    #[serde(default)]
    pub total_money: Option<Money>,
    #[serde(default)]
    pub refunded_money: Option<Money>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub location_id: Option<String>,
}

/// Square's `Money`: an integer in the currency's smallest unit.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Money {
    pub amount: i64,
    pub currency: String,
}

/// A payment's facts in kvitto's terms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PaymentFacts {
    pub transaction_ref: String,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub state: Option<PaymentState>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub location_ref: Option<String>,
}

pub fn envelope_info(request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    let head: EnvelopeHead = parse_json(request.body)?;
    if head.event_id.is_empty() {
        return Err(DecodeError::new("event_id is empty"));
    }
    // For payment events `data.id` is the payment id.
    let payment_id = head
        .data
        .and_then(|data| data.id)
        .filter(|id| !id.is_empty());
    let partition_key = payment_id.unwrap_or_else(|| head.event_id.clone());
    Ok(EnvelopeInfo {
        event_id: head.event_id,
        partition_key,
    })
}

pub fn decode(delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    let envelope = parse_envelope(delivery.body)?;
    let action = action(&envelope)?;
    Ok(DecodedEvent {
        event_id: envelope.event_id,
        event_type: envelope.event_type,
        action,
    })
}

fn action(envelope: &Envelope) -> Result<EventAction, DecodeError> {
    if envelope.event_type == TEST_NOTIFICATION_TYPE {
        return Ok(EventAction::Ignore {
            reason: "test notification",
        });
    }
    if !PURCHASE_TYPES.contains(&envelope.event_type.as_str()) {
        return Ok(EventAction::Ignore {
            reason: "event type not processed",
        });
    }
    let payment = envelope
        .data
        .as_ref()
        .and_then(|data| data.object.as_ref())
        .and_then(|object| object.payment.as_ref())
        .ok_or_else(|| DecodeError::new("payment event without data.object.payment"))?;
    let facts = payment_facts(payment)?;
    let updated_at = facts
        .updated_at
        .ok_or_else(|| DecodeError::new("payment without updated_at"))?;
    Ok(EventAction::Purchase(Claim {
        transaction_ref: facts.transaction_ref,
        amount_minor: facts.amount_minor,
        currency: facts.currency,
        state: facts.state,
        occurred_at: facts.occurred_at,
        source_version: updated_at.timestamp_millis(),
        location_ref: facts.location_ref,
        line_items: Vec::new(),
    }))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::new("body is not UTF-8"))?;
    serde_json::from_str(text)
        .map_err(|e| DecodeError::new(format!("body is not a square notification: {e}")))
}

fn parse_envelope(body: &[u8]) -> Result<Envelope, DecodeError> {
    let envelope: Envelope = parse_json(body)?;
    if envelope.event_id.is_empty() {
        return Err(DecodeError::new("event_id is empty"));
    }
    Ok(envelope)
}

/// Reads a payment's facts; fields Square left out stay `None`.
pub(crate) fn payment_facts(payment: &Payment) -> Result<PaymentFacts, DecodeError> {
    if payment.id.is_empty() {
        return Err(DecodeError::new("payment id is empty"));
    }
    // `total_money` includes the tip, which is what the customer paid.
    let money = payment
        .total_money
        .as_ref()
        .or(payment.amount_money.as_ref());
    let currency = money
        .map(|m| money::normalize_currency(&m.currency))
        .transpose()
        .map_err(|e| DecodeError::new(e.to_string()))?;
    let state = payment
        .status
        .as_deref()
        .map(|status| payment_state(status, payment, money))
        .transpose()?;
    Ok(PaymentFacts {
        transaction_ref: payment.id.clone(),
        amount_minor: money.map(|m| m.amount),
        currency,
        state,
        occurred_at: payment.created_at,
        updated_at: payment.updated_at,
        location_ref: payment.location_id.clone().filter(|id| !id.is_empty()),
    })
}

/// Square's payment status in kvitto's terms. Square has no refunded status:
/// a refund leaves the payment `COMPLETED` and raises `refunded_money`, so a
/// completed payment refunded in full is reported as refunded.
fn payment_state(
    status: &str,
    payment: &Payment,
    money: Option<&Money>,
) -> Result<PaymentState, DecodeError> {
    match status {
        "APPROVED" | "PENDING" => Ok(PaymentState::Pending),
        "COMPLETED" => {
            let refunded = payment.refunded_money.as_ref().map_or(0, |m| m.amount);
            let total = money.map_or(i64::MAX, |m| m.amount);
            if refunded > 0 && refunded >= total {
                Ok(PaymentState::Refunded)
            } else {
                Ok(PaymentState::Completed)
            }
        }
        "CANCELED" => Ok(PaymentState::Canceled),
        "FAILED" => Ok(PaymentState::Failed),
        _ => Err(DecodeError::new("unknown square payment status")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;

    /// A `payment.updated` shaped like the sample in Square's webhook
    /// reference, with kvitto's values.
    const PAYMENT_UPDATED: &str = r#"{
      "merchant_id": "ML8M1AQ1GQG2K",
      "type": "payment.updated",
      "event_id": "6a8f5f28-54a1-4eb0-a98a-3111513fd4fc",
      "created_at": "2026-03-02T09:15:03.120Z",
      "data": {
        "type": "payment",
        "id": "KkAkhdMsgzn59SM8A89WgKwekxLZY",
        "object": {
          "payment": {
            "id": "KkAkhdMsgzn59SM8A89WgKwekxLZY",
            "created_at": "2026-03-02T09:14:58.001Z",
            "updated_at": "2026-03-02T09:15:02.512Z",
            "amount_money": {"amount": 12900, "currency": "SEK"},
            "tip_money": {"amount": 1000, "currency": "SEK"},
            "total_money": {"amount": 13900, "currency": "SEK"},
            "approved_money": {"amount": 13900, "currency": "SEK"},
            "status": "COMPLETED",
            "source_type": "CARD",
            "location_id": "L88917AVBK2S5",
            "order_id": "pRsjRTgFWATl7so6DxdKBJa7ssbZY",
            "receipt_number": "KkAk",
            "version_token": "56pRkL3slrzet2iQrTp9n0bdJVYTB9YEWdTNjQfZOPV6o"
          }
        }
      }
    }"#;

    fn delivery(body: &str) -> Result<DecodedEvent, DecodeError> {
        testing::decode_body(ProviderKind::Square, body.as_bytes())
    }

    fn claim(body: &str) -> Claim {
        testing::purchase_claim(delivery(body).unwrap())
    }

    #[test]
    fn square_payment_updated_becomes_a_claim_with_total_money() {
        let event = delivery(PAYMENT_UPDATED).unwrap();
        assert_eq!(event.event_id, "6a8f5f28-54a1-4eb0-a98a-3111513fd4fc");
        assert_eq!(event.event_type, "payment.updated");
        let claim = claim(PAYMENT_UPDATED);
        let updated = Utc.with_ymd_and_hms(2026, 3, 2, 9, 15, 2).unwrap()
            + chrono::Duration::milliseconds(512);
        assert_eq!(
            claim,
            Claim {
                transaction_ref: "KkAkhdMsgzn59SM8A89WgKwekxLZY".into(),
                amount_minor: Some(13900),
                currency: Some("SEK".into()),
                state: Some(PaymentState::Completed),
                occurred_at: Some(
                    Utc.with_ymd_and_hms(2026, 3, 2, 9, 14, 58).unwrap()
                        + chrono::Duration::milliseconds(1)
                ),
                source_version: updated.timestamp_millis(),
                location_ref: Some("L88917AVBK2S5".into()),
                line_items: vec![],
            }
        );
    }

    #[test]
    fn square_envelope_info_keys_by_payment_id() {
        let headers = actix_web::http::header::HeaderMap::new();
        let request = WebhookRequest {
            headers: &headers,
            body: PAYMENT_UPDATED.as_bytes(),
            query: "",
        };
        let info = envelope_info(&request).unwrap();
        assert_eq!(info.event_id, "6a8f5f28-54a1-4eb0-a98a-3111513fd4fc");
        assert_eq!(info.partition_key, "KkAkhdMsgzn59SM8A89WgKwekxLZY");
    }

    #[test]
    fn square_statuses_map_to_payment_states() {
        let cases = [
            ("APPROVED", PaymentState::Pending),
            ("PENDING", PaymentState::Pending),
            ("COMPLETED", PaymentState::Completed),
            ("CANCELED", PaymentState::Canceled),
            ("FAILED", PaymentState::Failed),
        ];
        for (status, state) in cases {
            let body = PAYMENT_UPDATED.replace("\"COMPLETED\"", &format!("\"{status}\""));
            assert_eq!(claim(&body).state, Some(state), "{status}");
        }
        let unknown = PAYMENT_UPDATED.replace("\"COMPLETED\"", "\"SETTLED\"");
        assert!(delivery(&unknown).is_err());
    }

    #[test]
    fn square_fully_refunded_payment_is_refunded_and_partial_is_completed() {
        let full = PAYMENT_UPDATED.replace(
            "\"status\"",
            "\"refunded_money\": {\"amount\": 13900, \"currency\": \"SEK\"}, \"status\"",
        );
        assert_eq!(claim(&full).state, Some(PaymentState::Refunded));
        let partial = full.replace(
            "\"amount\": 13900, \"currency\": \"SEK\"}, \"status\"",
            "\"amount\": 500, \"currency\": \"SEK\"}, \"status\"",
        );
        assert_eq!(claim(&partial).state, Some(PaymentState::Completed));
    }

    #[test]
    fn square_test_notification_and_refunds_are_ignored() {
        let test = r#"{"merchant_id":"ML8M1AQ1GQG2K","type":"webhooks.test_notification",
            "event_id":"0d7d3f0b-1b1f-4d4c-9e37-3b7f0c1f0a11","created_at":"2026-03-02T09:00:00Z",
            "data":{"type":"webhooks","id":"bb7e2a0c-0b6e-4f4c-a2a2-7d3e6e0d3b7a"}}"#;
        assert_eq!(
            delivery(test).unwrap().action,
            EventAction::Ignore {
                reason: "test notification"
            }
        );
        let refund = r#"{"merchant_id":"ML8M1AQ1GQG2K","type":"refund.created",
            "event_id":"1f1c1b2e-7a55-4d0e-8f26-2f1e5b0e9c01","created_at":"2026-03-02T09:00:00Z",
            "data":{"type":"refund","id":"r1","object":{"refund":{"id":"r1"}}}}"#;
        assert_eq!(
            delivery(refund).unwrap().action,
            EventAction::Ignore {
                reason: "event type not processed"
            }
        );
    }

    #[test]
    fn square_amounts_must_be_integers() {
        for bad in ["12900.5", "\"12900\"", "1e3", "99999999999999999999"] {
            let body =
                PAYMENT_UPDATED.replace("13900, \"currency\"", &format!("{bad}, \"currency\""));
            assert!(delivery(&body).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn square_bad_bodies_are_decode_errors_never_panics() {
        let bodies: [&[u8]; 8] = [
            b"",
            b"\xff\xfe",
            b"not json",
            b"[]",
            b"{}",
            br#"{"event_id":"","type":"payment.created"}"#,
            br#"{"event_id":"e","type":"payment.created","data":{"id":"p"}}"#,
            br#"{"event_id":"e","type":"payment.created","data":{"object":{"payment":{"id":"p","total_money":{"amount":1,"currency":"XYZ"}}}}}"#,
        ];
        for body in bodies {
            let result = decode(&RawDelivery {
                body,
                headers: &[],
                query: "",
            });
            assert!(
                result.is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn square_payment_without_updated_at_is_rejected() {
        let body = PAYMENT_UPDATED.replace("\"updated_at\": \"2026-03-02T09:15:02.512Z\",", "");
        assert!(delivery(&body).is_err());
    }
}
