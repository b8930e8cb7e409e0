//! Decoding of Shopify order webhooks (`orders/create`, `orders/updated`,
//! `orders/paid`) into claims.
//!
//! The topic and the delivery id travel in headers (`X-Shopify-Topic`,
//! `X-Shopify-Webhook-Id`), the order in the body. Guarantees: the order id,
//! a 64-bit integer, is read as an integer and never through a float; money
//! arrives as decimal strings and goes through [`money::decimal_to_minor`];
//! anything malformed is a [`DecodeError`], never a panic or a guess.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::canonical::{LineItem, PaymentState};
use crate::money;
use crate::providers::{
    Claim, DecodeError, DecodedEvent, EnvelopeInfo, EventAction, RawDelivery, WebhookRequest,
};

/// The event type (`orders/create`, `app/uninstalled`, ...).
pub const TOPIC_HEADER: &str = "x-shopify-topic";
/// The delivery's id: kvitto's dedup key (Shopify's "Ignore duplicate
/// webhooks" guide names this header for it).
pub const WEBHOOK_ID_HEADER: &str = "x-shopify-webhook-id";

/// Topics whose body is an order kvitto records.
const PURCHASE_TOPICS: [&str; 3] = ["orders/create", "orders/updated", "orders/paid"];

/// The order fields kvitto reads; Shopify sends many more.
#[derive(Deserialize)]
struct OrderBody {
    /// u64, so serde_json reads the digits as an integer; a float or a
    /// number past u64 is an error rather than a rounded id.
    id: u64,
    created_at: String,
    #[serde(default)]
    updated_at: Option<String>,
    total_price: String,
    currency: String,
    #[serde(default)]
    financial_status: Option<String>,
    #[serde(default)]
    location_id: Option<LocationId>,
    #[serde(default)]
    line_items: Vec<OrderLine>,
}

/// Shopify sends a number; a string is accepted too so ids never need a
/// float to survive a proxy that quotes them.
#[derive(Deserialize)]
#[serde(untagged)]
enum LocationId {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
struct OrderLine {
    title: String,
    quantity: u64,
    price: String,
    #[serde(default)]
    sku: Option<String>,
}

#[derive(Deserialize)]
struct OrderId {
    id: u64,
}

/// The delivery id and the order id, read without decoding the whole order.
pub fn envelope_info(request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    let header = |name: &str| {
        request
            .header(name)
            .map_err(|_| DecodeError::new(format!("{name} header is not visible ASCII")))
    };
    let event_id = required(header(WEBHOOK_ID_HEADER)?, WEBHOOK_ID_HEADER)?;
    let topic = required(header(TOPIC_HEADER)?, TOPIC_HEADER)?;
    let text = utf8(request.body)?;

    if !PURCHASE_TOPICS.contains(&topic) {
        // Not about a transaction: still refuse what is not JSON at all.
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| DecodeError::new(format!("body is not JSON: {e}")))?;
        return Ok(EnvelopeInfo {
            partition_key: event_id.to_string(),
            event_id: event_id.to_string(),
        });
    }
    let order: OrderId = serde_json::from_str(text)
        .map_err(|e| DecodeError::new(format!("order body unreadable: {e}")))?;
    Ok(EnvelopeInfo {
        event_id: event_id.to_string(),
        partition_key: order.id.to_string(),
    })
}

/// Decodes a delivery read back from the bus; order topics become claims.
pub fn decode(delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    let event_id = required(delivery.header(WEBHOOK_ID_HEADER), WEBHOOK_ID_HEADER)?.to_string();
    let event_type = required(delivery.header(TOPIC_HEADER), TOPIC_HEADER)?.to_string();

    if !PURCHASE_TOPICS.contains(&event_type.as_str()) {
        let action = EventAction::Ignore {
            reason: "shopify topic not processed",
        };
        return Ok(DecodedEvent {
            event_id,
            event_type,
            action,
        });
    }
    let order: OrderBody = serde_json::from_str(utf8(delivery.body)?)
        .map_err(|e| DecodeError::new(format!("order body unreadable: {e}")))?;
    let claim = order_claim(order)?;
    Ok(DecodedEvent {
        event_id,
        event_type,
        action: EventAction::Purchase(claim),
    })
}

fn order_claim(order: OrderBody) -> Result<Claim, DecodeError> {
    let currency = money::normalize_currency(&order.currency).map_err(money_error)?;
    let amount_minor =
        money::decimal_to_minor(&order.total_price, &currency).map_err(money_error)?;
    let created_at = parse_time(&order.created_at, "created_at")?;
    let updated_at = match &order.updated_at {
        Some(text) => parse_time(text, "updated_at")?,
        None => created_at,
    };
    let state = match &order.financial_status {
        Some(status) => Some(
            financial_state(status)
                .ok_or_else(|| DecodeError::new(format!("unknown financial_status {status:?}")))?,
        ),
        // The API fills the state in.
        None => None,
    };
    let line_items = order
        .line_items
        .iter()
        .map(|line| {
            line_item(
                &line.title,
                line.quantity,
                &line.price,
                line.sku.as_deref(),
                &currency,
            )
        })
        .collect::<Result<_, _>>()?;

    Ok(Claim {
        transaction_ref: order.id.to_string(),
        amount_minor: Some(amount_minor),
        currency: Some(currency),
        state,
        occurred_at: Some(created_at),
        source_version: updated_at.timestamp_millis(),
        location_ref: order.location_id.map(|id| match id {
            LocationId::Number(number) => number.to_string(),
            LocationId::Text(text) => text,
        }),
        line_items,
    })
}

/// Maps Shopify's financial status (webhook `financial_status` in lower
/// case, GraphQL `displayFinancialStatus` in upper case) to kvitto's state.
/// A partial refund leaves a real purchase behind, so it stays completed;
/// an expired authorisation never moved money.
pub(crate) fn financial_state(status: &str) -> Option<PaymentState> {
    match status.to_ascii_lowercase().as_str() {
        "paid" | "partially_refunded" => Some(PaymentState::Completed),
        "pending" | "authorized" | "partially_paid" => Some(PaymentState::Pending),
        "refunded" => Some(PaymentState::Refunded),
        "voided" | "expired" => Some(PaymentState::Canceled),
        _ => None,
    }
}

/// One order line; the total is unit price times quantity, checked.
pub(crate) fn line_item(
    title: &str,
    quantity: u64,
    unit_price: &str,
    sku: Option<&str>,
    currency: &str,
) -> Result<LineItem, DecodeError> {
    let unit_price_minor = money::decimal_to_minor(unit_price, currency).map_err(money_error)?;
    let total_minor = i64::try_from(quantity)
        .ok()
        .and_then(|quantity| unit_price_minor.checked_mul(quantity))
        .ok_or_else(|| DecodeError::new("line item total out of range"))?;
    Ok(LineItem {
        name: title.to_string(),
        quantity: quantity.to_string(),
        unit_price_minor: Some(unit_price_minor),
        total_minor: Some(total_minor),
        sku: sku.filter(|sku| !sku.is_empty()).map(str::to_string),
    })
}

/// Shopify timestamps carry a UTC offset (`2024-05-14T12:23:45+02:00`).
pub(crate) fn parse_time(text: &str, field: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| DecodeError::new(format!("{field} is not an RFC 3339 time")))
}

fn required<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, DecodeError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| DecodeError::new(format!("{name} header missing")))
}

fn utf8(body: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(body).map_err(|_| DecodeError::new("body is not UTF-8"))
}

fn money_error(error: money::MoneyError) -> DecodeError {
    DecodeError::new(error.to_string())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    /// A trimmed `orders/paid` body in Shopify's real shape, with an id above
    /// 2^53 that a float would round to ...992.
    const ORDER: &str = r#"{
        "id": 9007199254740993,
        "admin_graphql_api_id": "gid://shopify/Order/9007199254740993",
        "created_at": "2026-03-14T10:15:30+01:00",
        "updated_at": "2026-03-14T10:16:05+01:00",
        "currency": "SEK",
        "presentment_currency": "SEK",
        "total_price": "149.50",
        "subtotal_price": "149.50",
        "total_tax": "29.90",
        "financial_status": "paid",
        "source_name": "pos",
        "location_id": 71234567890,
        "line_items": [
            {"id": 1, "title": "Kaffe åäö", "quantity": 2, "price": "34.75", "sku": "KAF-1"},
            {"id": 2, "title": "Kanelbulle 🥐", "quantity": 1, "price": "80.00", "sku": null}
        ]
    }"#;

    fn kept(topic: &str) -> Vec<(String, String)> {
        vec![
            (TOPIC_HEADER.to_string(), topic.to_string()),
            (
                WEBHOOK_ID_HEADER.to_string(),
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".to_string(),
            ),
        ]
    }

    fn decode_body(topic: &str, body: &str) -> Result<DecodedEvent, DecodeError> {
        let headers = kept(topic);
        decode(&RawDelivery {
            body: body.as_bytes(),
            headers: &headers,
            query: "",
        })
    }

    fn claim_of(body: &str) -> Result<Claim, DecodeError> {
        match decode_body("orders/paid", body)?.action {
            EventAction::Purchase(claim) => Ok(claim),
            other => panic!("expected a purchase, got {other:?}"),
        }
    }

    fn request_info(
        headers: &[(&'static str, &str)],
        body: &[u8],
    ) -> Result<EnvelopeInfo, DecodeError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        envelope_info(&WebhookRequest {
            headers: &map,
            body,
            query: "",
        })
    }

    #[test]
    fn shopify_decodes_paid_order_with_exact_values() {
        let claim = claim_of(ORDER).unwrap();
        assert_eq!(claim.transaction_ref, "9007199254740993");
        assert_eq!(claim.amount_minor, Some(14950));
        assert_eq!(claim.currency.as_deref(), Some("SEK"));
        assert_eq!(claim.state, Some(PaymentState::Completed));
        let created = DateTime::parse_from_rfc3339("2026-03-14T09:15:30Z").unwrap();
        assert_eq!(claim.occurred_at, Some(created.with_timezone(&Utc)));
        let updated = DateTime::parse_from_rfc3339("2026-03-14T09:16:05Z").unwrap();
        assert_eq!(claim.source_version, updated.timestamp_millis());
        assert_eq!(claim.location_ref.as_deref(), Some("71234567890"));
        assert_eq!(claim.line_items.len(), 2);
        assert_eq!(claim.line_items[0].name, "Kaffe åäö");
        assert_eq!(claim.line_items[0].quantity, "2");
        assert_eq!(claim.line_items[0].unit_price_minor, Some(3475));
        assert_eq!(claim.line_items[0].total_minor, Some(6950));
        assert_eq!(claim.line_items[0].sku.as_deref(), Some("KAF-1"));
        assert_eq!(claim.line_items[1].sku, None);
    }

    #[test]
    fn shopify_decode_names_topic_and_webhook_id() {
        let event = decode_body("orders/create", ORDER).unwrap();
        assert_eq!(event.event_type, "orders/create");
        assert_eq!(event.event_id, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    }

    #[test]
    fn shopify_maps_every_financial_status() {
        let cases = [
            ("paid", PaymentState::Completed),
            ("pending", PaymentState::Pending),
            ("authorized", PaymentState::Pending),
            ("partially_paid", PaymentState::Pending),
            ("refunded", PaymentState::Refunded),
            ("partially_refunded", PaymentState::Completed),
            ("voided", PaymentState::Canceled),
        ];
        for (status, state) in cases {
            let body = ORDER.replace(
                r#""financial_status": "paid""#,
                &format!(r#""financial_status": "{status}""#),
            );
            assert_eq!(claim_of(&body).unwrap().state, Some(state), "{status}");
        }
        let unknown = ORDER.replace(
            r#""financial_status": "paid""#,
            r#""financial_status": "lost""#,
        );
        assert!(claim_of(&unknown).is_err());
    }

    #[test]
    fn shopify_ignores_topics_it_does_not_process() {
        let event =
            decode_body("app/uninstalled", r#"{"id":1,"domain":"x.myshopify.com"}"#).unwrap();
        assert_eq!(
            event.action,
            EventAction::Ignore {
                reason: "shopify topic not processed"
            }
        );
    }

    #[test]
    fn shopify_rejects_ambiguous_amounts() {
        for bad in ["1e3", "10,00", "149.505", ""] {
            let body = ORDER.replace(
                r#""total_price": "149.50""#,
                &format!(r#""total_price": "{bad}""#),
            );
            assert!(claim_of(&body).is_err(), "{bad:?} was accepted");
            let body = ORDER.replace(r#""price": "80.00""#, &format!(r#""price": "{bad}""#));
            assert!(claim_of(&body).is_err(), "line price {bad:?} was accepted");
        }
        let number = ORDER.replace(r#""total_price": "149.50""#, r#""total_price": 149.5"#);
        assert!(claim_of(&number).is_err());
    }

    #[test]
    fn shopify_rejects_order_ids_that_are_not_integers() {
        for bad in [
            "9007199254740993.0",
            "9.007199254740993e15",
            "-5",
            "18446744073709551616",
            "\"x\"",
        ] {
            let body = ORDER.replacen("9007199254740993", bad, 1);
            assert!(claim_of(&body).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn shopify_accepts_null_location_and_missing_updated_at() {
        let body = ORDER
            .replace(r#""location_id": 71234567890"#, r#""location_id": null"#)
            .replace(r#""updated_at": "2026-03-14T10:16:05+01:00","#, "");
        let claim = claim_of(&body).unwrap();
        assert_eq!(claim.location_ref, None);
        assert_eq!(
            Some(claim.source_version),
            claim.occurred_at.map(|t| t.timestamp_millis())
        );
    }

    #[test]
    fn shopify_decode_requires_webhook_id_and_topic() {
        let body = ORDER.as_bytes();
        let only_topic = vec![(TOPIC_HEADER.to_string(), "orders/paid".to_string())];
        assert!(
            decode(&RawDelivery {
                body,
                headers: &only_topic,
                query: ""
            })
            .is_err()
        );
        let only_id = vec![(WEBHOOK_ID_HEADER.to_string(), "abc".to_string())];
        assert!(
            decode(&RawDelivery {
                body,
                headers: &only_id,
                query: ""
            })
            .is_err()
        );
    }

    #[test]
    fn shopify_decode_rejects_bodies_that_are_not_orders() {
        for bad in ["", "not json", "[]", "{}", r#"{"id":1}"#] {
            assert!(
                decode_body("orders/paid", bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        let headers = kept("orders/paid");
        let latin1 = RawDelivery {
            body: b"{\"id\":1,\xe5}",
            headers: &headers,
            query: "",
        };
        assert_eq!(
            decode(&latin1).unwrap_err(),
            DecodeError::new("body is not UTF-8")
        );
    }

    #[test]
    fn shopify_envelope_keys_orders_by_exact_order_id() {
        let headers = [(WEBHOOK_ID_HEADER, "wh-1"), (TOPIC_HEADER, "orders/create")];
        let info = request_info(&headers, ORDER.as_bytes()).unwrap();
        assert_eq!(info.event_id, "wh-1");
        assert_eq!(info.partition_key, "9007199254740993");
    }

    #[test]
    fn shopify_envelope_falls_back_to_webhook_id_for_other_topics() {
        let headers = [
            (WEBHOOK_ID_HEADER, "wh-2"),
            (TOPIC_HEADER, "app/uninstalled"),
        ];
        let info = request_info(&headers, br#"{"id":5}"#).unwrap();
        assert_eq!(info.partition_key, "wh-2");
    }

    #[test]
    fn shopify_envelope_rejects_missing_headers_and_bad_bodies() {
        let both = [(WEBHOOK_ID_HEADER, "wh-3"), (TOPIC_HEADER, "orders/create")];
        assert!(request_info(&both[1..], ORDER.as_bytes()).is_err());
        assert!(request_info(&both[..1], ORDER.as_bytes()).is_err());
        assert_eq!(
            request_info(&both, b"\xff\xfe").unwrap_err(),
            DecodeError::new("body is not UTF-8")
        );
        assert!(request_info(&both, b"{\"id\":").is_err());
        assert!(request_info(&both, br#"{"id":1.5}"#).is_err());
    }
}
