//! Decoding the generic adapter's events and transactions.
//!
//! kvitto defines the format, so it is strict: an amount is either a decimal
//! string (`"amount": "149.50"`) or integer minor units
//! (`"amount_minor": 14950`), exactly one of them; decimal strings go through
//! [`crate::money::decimal_to_minor`] and never through a float; times are
//! RFC 3339. Events other than `transaction.created` / `transaction.updated`
//! are valid but ignored. The same transaction shape is what the POS's
//! lookup API answers, so [`TransactionBody`] serves both paths.

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use crate::canonical::{LineItem, PaymentState};
use crate::money;
use crate::providers::{
    Claim, DecodeError, DecodedEvent, EnvelopeInfo, EventAction, ProviderTruth, RawDelivery,
    WebhookRequest,
};

pub const TRANSACTION_CREATED: &str = "transaction.created";
pub const TRANSACTION_UPDATED: &str = "transaction.updated";

/// The fields ingress needs, read without decoding the rest.
#[derive(Deserialize)]
struct Envelope {
    event_id: String,
    #[serde(rename = "type", default)]
    event_type: String,
    #[serde(default)]
    transaction_id: Option<String>,
}

/// One transaction as the POS describes it, in a webhook or an API answer.
#[derive(Debug, Deserialize)]
pub(crate) struct TransactionBody {
    transaction_id: String,
    #[serde(default)]
    amount: Option<String>,
    #[serde(default)]
    amount_minor: Option<i64>,
    currency: String,
    status: String,
    occurred_at: String,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    location_id: Option<String>,
    #[serde(default)]
    line_items: Vec<LineItemBody>,
}

#[derive(Debug, Deserialize)]
struct LineItemBody {
    name: String,
    quantity: Quantity,
    unit_price: String,
    #[serde(default)]
    sku: Option<String>,
}

/// Whole pieces as a JSON integer, or a decimal string for weighed goods.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Quantity {
    Whole(u64),
    Decimal(String),
}

pub fn envelope_info(request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    let envelope = parse_envelope(request.body)?;
    let partition_key = envelope
        .transaction_id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| envelope.event_id.clone());
    Ok(EnvelopeInfo {
        event_id: envelope.event_id,
        partition_key,
    })
}

pub fn decode(delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    let envelope = parse_envelope(delivery.body)?;
    let action = match envelope.event_type.as_str() {
        TRANSACTION_CREATED | TRANSACTION_UPDATED => {
            let body: TransactionBody = serde_json::from_slice(delivery.body)
                .map_err(|e| DecodeError::new(format!("transaction fields: {e}")))?;
            EventAction::Purchase(claim(body.into_truth()?))
        }
        _ => EventAction::Ignore {
            reason: "event type not processed",
        },
    };
    Ok(DecodedEvent {
        event_id: envelope.event_id,
        event_type: envelope.event_type,
        action,
    })
}

fn parse_envelope(body: &[u8]) -> Result<Envelope, DecodeError> {
    if std::str::from_utf8(body).is_err() {
        return Err(DecodeError::new("body is not UTF-8"));
    }
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("body is not a generic event: {e}")))?;
    if envelope.event_id.is_empty() {
        return Err(DecodeError::new("event_id is empty"));
    }
    Ok(envelope)
}

fn claim(truth: ProviderTruth) -> Claim {
    Claim {
        transaction_ref: truth.transaction_ref,
        amount_minor: Some(truth.amount_minor),
        currency: Some(truth.currency),
        state: Some(truth.state),
        occurred_at: Some(truth.occurred_at),
        source_version: truth.source_version,
        location_ref: truth.location_ref,
        line_items: truth.line_items,
    }
}

impl TransactionBody {
    /// Checks every field and converts amounts to minor units.
    pub(crate) fn into_truth(self) -> Result<ProviderTruth, DecodeError> {
        if self.transaction_id.is_empty() {
            return Err(DecodeError::new("transaction_id is empty"));
        }
        let currency = money::normalize_currency(&self.currency).map_err(money_error)?;
        let amount_minor = match (&self.amount, self.amount_minor) {
            (Some(amount), None) => {
                money::decimal_to_minor(amount, &currency).map_err(money_error)?
            }
            (None, Some(minor)) => minor,
            _ => {
                return Err(DecodeError::new(
                    "exactly one of amount and amount_minor is required",
                ));
            }
        };
        let state = PaymentState::parse(&self.status)
            .ok_or_else(|| DecodeError::new(format!("unknown status {:?}", self.status)))?;
        let occurred_at = parse_time("occurred_at", &self.occurred_at)?;
        let version_time = match &self.updated_at {
            Some(updated_at) => parse_time("updated_at", updated_at)?,
            None => occurred_at,
        };
        let line_items = self
            .line_items
            .into_iter()
            .map(|item| item.into_line_item(&currency))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ProviderTruth {
            transaction_ref: self.transaction_id,
            amount_minor,
            currency,
            state,
            occurred_at,
            source_version: version_time.timestamp_millis(),
            location_ref: self.location_id.filter(|id| !id.is_empty()),
            line_items,
        })
    }
}

impl LineItemBody {
    fn into_line_item(self, currency: &str) -> Result<LineItem, DecodeError> {
        let quantity = match self.quantity {
            Quantity::Whole(count) => count.to_string(),
            Quantity::Decimal(text) if is_unsigned_decimal(&text) => text,
            Quantity::Decimal(text) => {
                return Err(DecodeError::new(format!(
                    "quantity {text:?} is not a plain decimal"
                )));
            }
        };
        let unit_price_minor =
            money::decimal_to_minor(&self.unit_price, currency).map_err(money_error)?;
        Ok(LineItem {
            total_minor: Some(line_total(unit_price_minor, &quantity)?),
            name: self.name,
            quantity,
            unit_price_minor: Some(unit_price_minor),
            sku: self.sku.filter(|sku| !sku.is_empty()),
        })
    }
}

/// Unit price times quantity, rounded to the nearest minor unit (half away
/// from zero, as tills round weighed goods).
fn line_total(unit_price_minor: i64, quantity: &str) -> Result<i64, DecodeError> {
    let out_of_range = || DecodeError::new("line item total is out of range");
    let quantity: Decimal = quantity.parse().map_err(|_| out_of_range())?;
    Decimal::from(unit_price_minor)
        .checked_mul(quantity)
        .ok_or_else(out_of_range)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .ok_or_else(out_of_range)
}

/// `digits(.digits)?` and nothing else.
fn is_unsigned_decimal(text: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    match text.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(text),
    }
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| DecodeError::new(format!("{field} is not RFC 3339")))
}

fn money_error(error: money::MoneyError) -> DecodeError {
    DecodeError::new(error.to_string())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;
    use chrono::TimeZone;

    use super::*;

    const CREATED: &str = r#"{
        "event_id": "evt_7f3a",
        "type": "transaction.created",
        "transaction_id": "txn_0042",
        "amount": "149.50",
        "currency": "sek",
        "status": "completed",
        "occurred_at": "2026-03-14T09:15:02+01:00",
        "updated_at": "2026-03-14T08:15:04.250Z",
        "location_id": "store-0007",
        "line_items": [
            {"name": "Kanelbulle", "quantity": 2, "unit_price": "38.00", "sku": "KAF-001"},
            {"name": "Äppelmust", "quantity": "1", "unit_price": "33.50"},
            {"name": "Potatis (kg)", "quantity": "1.5", "unit_price": "26.67"}
        ]
    }"#;

    fn decode_text(body: &str) -> Result<DecodedEvent, DecodeError> {
        decode(&RawDelivery {
            body: body.as_bytes(),
            headers: &[],
            query: "",
        })
    }

    fn claim_of(body: &str) -> Claim {
        match decode_text(body).unwrap().action {
            EventAction::Purchase(claim) => claim,
            other => panic!("expected a purchase, got {other:?}"),
        }
    }

    #[test]
    fn generic_decodes_a_created_transaction() {
        let event = decode_text(CREATED).unwrap();
        assert_eq!(event.event_id, "evt_7f3a");
        assert_eq!(event.event_type, "transaction.created");
        let EventAction::Purchase(claim) = event.action else {
            panic!("not a purchase")
        };
        assert_eq!(claim.transaction_ref, "txn_0042");
        assert_eq!(claim.amount_minor, Some(14950));
        assert_eq!(claim.currency.as_deref(), Some("SEK"));
        assert_eq!(claim.state, Some(PaymentState::Completed));
        assert_eq!(
            claim.occurred_at,
            Some(Utc.with_ymd_and_hms(2026, 3, 14, 8, 15, 2).unwrap())
        );
        let updated = Utc
            .with_ymd_and_hms(2026, 3, 14, 8, 15, 4)
            .unwrap()
            .timestamp_millis()
            + 250;
        assert_eq!(claim.source_version, updated);
        assert_eq!(claim.location_ref.as_deref(), Some("store-0007"));

        let items = &claim.line_items;
        assert_eq!(items.len(), 3);
        assert_eq!(
            (items[0].quantity.as_str(), items[0].total_minor),
            ("2", Some(7600))
        );
        assert_eq!(items[0].sku.as_deref(), Some("KAF-001"));
        assert_eq!(
            (items[1].name.as_str(), items[1].sku.as_ref()),
            ("Äppelmust", None)
        );
        // 2667 öre × 1.5 = 4000.5, rounded half away from zero.
        assert_eq!(
            (items[2].unit_price_minor, items[2].total_minor),
            (Some(2667), Some(4001))
        );
    }

    #[test]
    fn generic_source_version_falls_back_to_occurred_at() {
        let body = CREATED.replace(r#""updated_at": "2026-03-14T08:15:04.250Z","#, "");
        let occurred = Utc.with_ymd_and_hms(2026, 3, 14, 8, 15, 2).unwrap();
        assert_eq!(claim_of(&body).source_version, occurred.timestamp_millis());
    }

    #[test]
    fn generic_takes_integer_minor_units() {
        let body = CREATED.replace(r#""amount": "149.50""#, r#""amount_minor": 14950"#);
        assert_eq!(claim_of(&body).amount_minor, Some(14950));
    }

    #[test]
    fn generic_requires_exactly_one_amount_form() {
        let both = CREATED.replace(
            r#""amount": "149.50""#,
            r#""amount": "149.50", "amount_minor": 14950"#,
        );
        assert!(decode_text(&both).is_err());
        let neither = CREATED.replace(r#""amount": "149.50","#, "");
        assert!(decode_text(&neither).is_err());
    }

    #[test]
    fn generic_rejects_ambiguous_amounts() {
        for amount in [r#""1e3""#, r#""10,00""#, r#""149.505""#, "149.50", r#""""#] {
            let body = CREATED.replace(r#""149.50""#, amount);
            assert!(decode_text(&body).is_err(), "{amount} was accepted");
        }
        for minor in ["149.5", "1e3", "\"14950\"", "99999999999999999999"] {
            let body = CREATED.replace(
                r#""amount": "149.50""#,
                &format!(r#""amount_minor": {minor}"#),
            );
            assert!(decode_text(&body).is_err(), "{minor} was accepted");
        }
    }

    #[test]
    fn generic_rejects_bad_fields() {
        let cases = [
            (r#""completed""#, r#""done""#),
            (r#""sek""#, r#""kronor""#),
            (r#""2026-03-14T09:15:02+01:00""#, r#""14 mars 2026""#),
            (r#""quantity": 2"#, r#""quantity": 1.5"#),
            (r#""quantity": 2"#, r#""quantity": -2"#),
            (r#""quantity": "1.5""#, r#""quantity": "1,5""#),
            (r#""unit_price": "38.00""#, r#""unit_price": 38"#),
            (r#""txn_0042""#, r#""""#),
        ];
        for (from, to) in cases {
            let body = CREATED.replacen(from, to, 1);
            assert!(decode_text(&body).is_err(), "{to} was accepted");
        }
    }

    #[test]
    fn generic_ignores_other_event_types() {
        let body = CREATED.replace("transaction.created", "till.opened");
        let event = decode_text(&body).unwrap();
        assert_eq!(
            event.action,
            EventAction::Ignore {
                reason: "event type not processed"
            }
        );
        let bare = r#"{"event_id": "evt_9", "type": "ping"}"#;
        assert!(matches!(
            decode_text(bare).unwrap().action,
            EventAction::Ignore { .. }
        ));
    }

    #[test]
    fn generic_envelope_keys_by_transaction_then_event() {
        let headers = HeaderMap::new();
        let request = |body: &'static [u8]| WebhookRequest {
            headers: &headers,
            body,
            query: "",
        };
        let info = envelope_info(&request(CREATED.as_bytes())).unwrap();
        assert_eq!(
            info,
            EnvelopeInfo {
                event_id: "evt_7f3a".into(),
                partition_key: "txn_0042".into()
            }
        );
        let ping = envelope_info(&request(br#"{"event_id":"evt_9","type":"ping"}"#)).unwrap();
        assert_eq!(ping.partition_key, "evt_9");
    }

    #[test]
    fn generic_envelope_rejects_unreadable_bodies() {
        let headers = HeaderMap::new();
        for body in [
            &b"\xff\xfe"[..],
            b"",
            b"not json",
            b"[]",
            br#"{"type":"x"}"#,
            br#"{"event_id":""}"#,
        ] {
            let request = WebhookRequest {
                headers: &headers,
                body,
                query: "",
            };
            assert!(envelope_info(&request).is_err(), "{body:?} was accepted");
        }
        let error = envelope_info(&WebhookRequest {
            headers: &headers,
            body: b"\xff",
            query: "",
        });
        assert_eq!(error, Err(DecodeError::new("body is not UTF-8")));
    }
}
