//! Decoding of Zettle Pusher deliveries into claims.
//!
//! The envelope (`organizationUuid`, `messageUuid`, `eventName`, `payload`,
//! `timestamp`) carries the event as a JSON *string* in `payload`, decoded
//! here a second time. `PurchaseCreated` becomes a claim; `TestMessage` and
//! every other event are acknowledged and ignored. Guarantees: money is read
//! as integer minor units (a fractional or exponent amount is an error, not
//! a rounding), and anything malformed is a [`DecodeError`], never a panic.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use crate::canonical::{LineItem, PaymentState};
use crate::money;
use crate::providers::{
    Claim, DecodeError, DecodedEvent, EnvelopeInfo, EventAction, RawDelivery, WebhookRequest,
};

/// The event kvitto records.
pub const PURCHASE_CREATED: &str = "PurchaseCreated";
/// Sent once when a subscription is first used.
pub const TEST_MESSAGE: &str = "TestMessage";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    message_uuid: String,
    event_name: String,
    payload: String,
}

#[derive(Deserialize)]
struct PurchaseKey {
    #[serde(rename = "purchaseUUID1")]
    purchase_uuid1: String,
}

/// A Zettle purchase, as the payload and the Purchase API both carry it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ZettlePurchase {
    #[serde(rename = "purchaseUUID1")]
    pub purchase_uuid1: String,
    /// Integer minor units; i64 so a fractional amount fails to decode.
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Set on a purchase that a later refund purchase has refunded.
    #[serde(default)]
    pub refunded: Option<bool>,
    #[serde(default)]
    pub products: Vec<Product>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Product {
    #[serde(default)]
    pub name: Option<String>,
    /// A decimal string in Zettle's format ("1", "0.5" for weighed goods).
    pub quantity: String,
    #[serde(default)]
    pub unit_price: Option<i64>,
    #[serde(default)]
    pub sku: Option<String>,
}

/// The message id and the purchase id, keying the delivery on the bus.
pub fn envelope_info(request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    let envelope = envelope(request.body)?;
    // A payload that names no purchase (a test message) keys by message.
    let partition_key = serde_json::from_str::<PurchaseKey>(&envelope.payload)
        .ok()
        .map(|key| key.purchase_uuid1)
        .filter(|uuid| !uuid.is_empty())
        .unwrap_or_else(|| envelope.message_uuid.clone());
    Ok(EnvelopeInfo {
        event_id: envelope.message_uuid,
        partition_key,
    })
}

/// Decodes a delivery read back from the bus.
pub fn decode(delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    let envelope = envelope(delivery.body)?;
    let action = match envelope.event_name.as_str() {
        PURCHASE_CREATED => {
            let purchase: ZettlePurchase = serde_json::from_str(&envelope.payload)
                .map_err(|e| DecodeError::new(format!("purchase payload unreadable: {e}")))?;
            EventAction::Purchase(purchase_claim(&purchase)?)
        }
        TEST_MESSAGE => EventAction::Ignore {
            reason: "zettle test message",
        },
        _ => EventAction::Ignore {
            reason: "zettle event not processed",
        },
    };
    Ok(DecodedEvent {
        event_id: envelope.message_uuid,
        event_type: envelope.event_name,
        action,
    })
}

fn envelope(body: &[u8]) -> Result<Envelope, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::new("body is not UTF-8"))?;
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|e| DecodeError::new(format!("envelope unreadable: {e}")))?;
    if envelope.message_uuid.is_empty() {
        return Err(DecodeError::new("envelope has an empty messageUuid"));
    }
    Ok(envelope)
}

/// The facts a purchase states; shared by the webhook and the API answer.
pub(crate) struct PurchaseFacts {
    pub amount_minor: i64,
    pub currency: String,
    pub state: PaymentState,
    pub created_at: DateTime<Utc>,
    pub line_items: Vec<LineItem>,
}

pub(crate) fn purchase_facts(purchase: &ZettlePurchase) -> Result<PurchaseFacts, DecodeError> {
    if purchase.purchase_uuid1.is_empty() {
        return Err(DecodeError::new("purchase has an empty purchaseUUID1"));
    }
    let currency = money::normalize_currency(&purchase.currency)
        .map_err(|e| DecodeError::new(e.to_string()))?;
    let created = purchase
        .created
        .as_deref()
        .or(purchase.timestamp.as_deref())
        .ok_or_else(|| DecodeError::new("purchase has neither created nor timestamp"))?;
    // A purchase exists only once paid; a refund is a separate purchase that
    // marks this one `refunded`.
    let state = if purchase.refunded == Some(true) {
        PaymentState::Refunded
    } else {
        PaymentState::Completed
    };
    Ok(PurchaseFacts {
        amount_minor: purchase.amount,
        currency,
        state,
        created_at: parse_time(created)?,
        line_items: purchase
            .products
            .iter()
            .map(line_item)
            .collect::<Result<_, _>>()?,
    })
}

fn purchase_claim(purchase: &ZettlePurchase) -> Result<Claim, DecodeError> {
    let facts = purchase_facts(purchase)?;
    Ok(Claim {
        transaction_ref: purchase.purchase_uuid1.clone(),
        amount_minor: Some(facts.amount_minor),
        currency: Some(facts.currency),
        state: Some(facts.state),
        occurred_at: Some(facts.created_at),
        // Zettle never changes a purchase's amount in place: creation time
        // orders it.
        source_version: facts.created_at.timestamp_millis(),
        // Zettle purchases name an organization and a cashier, no location.
        location_ref: None,
        line_items: facts.line_items,
    })
}

/// One product line. The total is unit price times quantity, rounded half
/// away from zero for weighed quantities as the till rounds them.
fn line_item(product: &Product) -> Result<LineItem, DecodeError> {
    let quantity = parse_quantity(&product.quantity)?;
    let total_minor = match product.unit_price {
        Some(unit) => Some(
            Decimal::from(unit)
                .checked_mul(quantity)
                .map(|total| {
                    total.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
                })
                .and_then(|total| i64::try_from(total).ok())
                .ok_or_else(|| DecodeError::new("product total out of range"))?,
        ),
        None => None,
    };
    Ok(LineItem {
        name: product.name.clone().unwrap_or_default(),
        quantity: product.quantity.clone(),
        unit_price_minor: product.unit_price,
        total_minor,
        sku: product.sku.clone().filter(|sku| !sku.is_empty()),
    })
}

/// Longest quantity text read (18 digits and a point), well inside what a
/// `Decimal` holds; the multiplication by the price is checked.
const MAX_QUANTITY_CHARS: usize = 19;

/// `digits(.digits)?` only: Zettle's quantity strings have no sign,
/// exponent or grouping.
fn parse_quantity(text: &str) -> Result<Decimal, DecodeError> {
    let bad = || DecodeError::new(format!("product quantity {text:?} is not a plain decimal"));
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || text.len() > MAX_QUANTITY_CHARS {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

/// Zettle writes offsets without a colon (`2026-03-14T09:15:31.123+0000`);
/// RFC 3339 (`...Z`, `+00:00`) is accepted too.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| DecodeError::new(format!("time {text:?} is not ISO 8601")))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;
    use serde_json::json;

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;

    const PURCHASE_UUID: &str = "0d6f1a38-1f3c-11ef-8000-5e5a1c2b3d4e";

    fn payload() -> serde_json::Value {
        json!({
            "purchaseUUID": "DW8aOB88Ee-AAF5aHCs9Tg",
            "purchaseUUID1": PURCHASE_UUID,
            "amount": 14950,
            "vatAmount": 2990,
            "currency": "SEK",
            "created": "2026-03-14T09:15:30.250+0000",
            "products": [
                {"name": "Kaffe åäö", "quantity": "2", "unitPrice": 3475, "sku": "KAF-1"},
                {"name": "Lösgodis 🍬", "quantity": "0.5", "unitPrice": 15999},
            ],
            "payments": [{"uuid": "8c1f", "amount": 14950, "type": "IZETTLE_CARD"}],
        })
    }

    fn envelope_with(event_name: &str, payload: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "organizationUuid": "ab2c8f4e-1b7a-11ef-9a3b-0242ac120002",
            "messageUuid": "6a4b1a52-2d1c-4a0b-9d89-cc1e0b9b2f10",
            "eventName": event_name,
            "messageId": "3f1d7f1e0c7a4a66",
            "payload": payload.to_string(),
            "timestamp": "2026-03-14T09:15:31.123Z",
        }))
        .unwrap()
    }

    fn decode_body(body: &[u8]) -> Result<DecodedEvent, DecodeError> {
        testing::decode_body(ProviderKind::Zettle, body)
    }

    fn claim_of(payload: &serde_json::Value) -> Result<Claim, DecodeError> {
        match decode_body(&envelope_with(PURCHASE_CREATED, payload))?.action {
            EventAction::Purchase(claim) => Ok(claim),
            other => panic!("expected a purchase, got {other:?}"),
        }
    }

    fn info(body: &[u8]) -> Result<EnvelopeInfo, DecodeError> {
        let headers = HeaderMap::new();
        envelope_info(&WebhookRequest {
            headers: &headers,
            body,
            query: "",
        })
    }

    #[test]
    fn zettle_decodes_purchase_created_with_exact_values() {
        let event = decode_body(&envelope_with(PURCHASE_CREATED, &payload())).unwrap();
        assert_eq!(event.event_id, "6a4b1a52-2d1c-4a0b-9d89-cc1e0b9b2f10");
        assert_eq!(event.event_type, "PurchaseCreated");
        let EventAction::Purchase(claim) = event.action else {
            panic!("not a purchase")
        };
        assert_eq!(claim.transaction_ref, PURCHASE_UUID);
        assert_eq!(claim.amount_minor, Some(14950));
        assert_eq!(claim.currency.as_deref(), Some("SEK"));
        assert_eq!(claim.state, Some(PaymentState::Completed));
        let created = DateTime::parse_from_rfc3339("2026-03-14T09:15:30.250Z").unwrap();
        assert_eq!(claim.occurred_at, Some(created.with_timezone(&Utc)));
        assert_eq!(claim.source_version, created.timestamp_millis());
        assert_eq!(claim.location_ref, None);
        assert_eq!(claim.line_items[0].name, "Kaffe åäö");
        assert_eq!(claim.line_items[0].quantity, "2");
        assert_eq!(claim.line_items[0].total_minor, Some(6950));
        assert_eq!(claim.line_items[0].sku.as_deref(), Some("KAF-1"));
        // 0.5 × 159.99 = 79.995, rounded half away from zero.
        assert_eq!(claim.line_items[1].quantity, "0.5");
        assert_eq!(claim.line_items[1].total_minor, Some(8000));
        assert_eq!(claim.line_items[1].sku, None);
    }

    #[test]
    fn zettle_reads_timestamp_when_created_is_absent_and_marks_refunds() {
        let mut payload = payload();
        let object = payload.as_object_mut().unwrap();
        object.remove("created");
        object.insert("timestamp".into(), json!("2026-03-14T10:15:30.250+01:00"));
        object.insert("refunded".into(), json!(true));
        let claim = claim_of(&payload).unwrap();
        let created = DateTime::parse_from_rfc3339("2026-03-14T09:15:30.250Z").unwrap();
        assert_eq!(claim.occurred_at, Some(created.with_timezone(&Utc)));
        assert_eq!(claim.state, Some(PaymentState::Refunded));
    }

    #[test]
    fn zettle_ignores_test_messages_and_other_events() {
        let test = decode_body(&envelope_with(TEST_MESSAGE, &json!({"data": "test"}))).unwrap();
        assert_eq!(
            test.action,
            EventAction::Ignore {
                reason: "zettle test message"
            }
        );
        let other = decode_body(&envelope_with("ProductCreated", &json!({}))).unwrap();
        assert_eq!(
            other.action,
            EventAction::Ignore {
                reason: "zettle event not processed"
            }
        );
    }

    #[test]
    fn zettle_rejects_amounts_that_are_not_integer_minor_units() {
        for bad in [json!(149.5), json!("14950"), json!(1e3), json!(null)] {
            let mut payload = payload();
            payload["amount"] = bad.clone();
            assert!(claim_of(&payload).is_err(), "{bad} was accepted");
        }
        let mut payload = payload();
        payload["products"][0]["unitPrice"] = json!(34.75);
        assert!(claim_of(&payload).is_err());
    }

    #[test]
    fn zettle_rejects_quantities_that_are_not_plain_decimals() {
        for bad in [
            "",
            "1e3",
            "1,5",
            "-1",
            "+1",
            "1.",
            ".5",
            "١",
            "99999999999999999999",
        ] {
            let mut payload = payload();
            payload["products"][0]["quantity"] = json!(bad);
            assert!(claim_of(&payload).is_err(), "{bad:?} was accepted");
        }
        let mut payload = payload();
        payload["products"][0]["quantity"] = json!(2);
        assert!(
            claim_of(&payload).is_err(),
            "a numeric quantity was accepted"
        );
    }

    #[test]
    fn zettle_rejects_product_totals_out_of_range_without_panicking() {
        let mut payload = payload();
        payload["products"][0]["quantity"] = json!("999999999999999999");
        payload["products"][0]["unitPrice"] = json!(i64::MAX);
        assert_eq!(
            claim_of(&payload).unwrap_err(),
            DecodeError::new("product total out of range")
        );
    }

    #[test]
    fn zettle_rejects_unreadable_envelopes_and_payloads() {
        assert_eq!(
            decode_body(b"\xff{").unwrap_err(),
            DecodeError::new("body is not UTF-8")
        );
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"messageUuid":"m","eventName":"PurchaseCreated"}"#,
        ] {
            assert!(decode_body(bad).is_err(), "{bad:?} was accepted");
        }
        let object_payload = br#"{"messageUuid":"m","eventName":"PurchaseCreated","payload":{}}"#;
        assert!(decode_body(object_payload).is_err());
        let not_json = br#"{"messageUuid":"m","eventName":"PurchaseCreated","payload":"{oops"}"#;
        assert!(decode_body(not_json).is_err());
        let mut bad_time = payload();
        bad_time["created"] = json!("14/03/2026 09:15");
        assert!(claim_of(&bad_time).is_err());
        let mut bad_currency = payload();
        bad_currency["currency"] = json!("KRONOR");
        assert!(claim_of(&bad_currency).is_err());
    }

    #[test]
    fn zettle_envelope_keys_by_purchase_uuid_else_message_uuid() {
        let purchase = info(&envelope_with(PURCHASE_CREATED, &payload())).unwrap();
        assert_eq!(purchase.event_id, "6a4b1a52-2d1c-4a0b-9d89-cc1e0b9b2f10");
        assert_eq!(purchase.partition_key, PURCHASE_UUID);
        let test = info(&envelope_with(TEST_MESSAGE, &json!({"data": "test"}))).unwrap();
        assert_eq!(test.partition_key, "6a4b1a52-2d1c-4a0b-9d89-cc1e0b9b2f10");
    }

    #[test]
    fn zettle_envelope_rejects_bodies_that_are_not_envelopes() {
        assert_eq!(
            info(b"\xc3\x28").unwrap_err(),
            DecodeError::new("body is not UTF-8")
        );
        assert!(info(b"[1,2]").is_err());
        assert!(info(br#"{"messageUuid":"","eventName":"x","payload":""}"#).is_err());
    }
}
