//! Stripe payload decoding: turns an event into what kvitto acts on.
//!
//! A Stripe event is `{id: "evt_...", object: "event", type, created,
//! livemode, data: {object}}` (Stripe API reference, "The Event object").
//! Purchases arrive as `charge.succeeded`, `charge.updated`,
//! `charge.captured`, `charge.refunded`, `charge.pending`, `charge.failed`
//! (the object is a charge) and
//! `payment_intent.succeeded` (the object is a payment intent). The same
//! [`Charge`] and [`PaymentIntent`] shapes are what the API answers, so
//! `api.rs` reuses them.
//!
//! Events about kvitto's own Connect payouts (`payout.paid`,
//! `payout.failed`, `payout.canceled`, `payout.updated`), transfers
//! (`transfer.created`) and connected accounts (`account.updated`) become
//! [`SettlementSignal`]s; `account` names the connected account a Connect
//! event happened on ("Connect webhooks").
//!
//! Guarantee: every input gives a value or a [`DecodeError`]; amounts are
//! Stripe's integer minor units, kept as they are (for zero-decimal
//! currencies such as JPY they already are whole units); `source_version` is
//! the event's `created` in milliseconds, since Stripe objects carry no
//! `updated_at`. A payment intent is keyed by its latest charge where it
//! names one, so that a purchase reported through both kinds of event is one
//! transaction, not two.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::canonical::PaymentState;
use crate::money;
use crate::providers::{
    Claim, DecodeError, DecodedEvent, EnvelopeInfo, EventAction, RawDelivery, WebhookRequest,
};
use crate::settlement::rails::stripe::{Payout, payout_status};
use crate::settlement::{Rail, SettlementSignal};

/// Charge events. `charge.pending` and `charge.failed` carry the same
/// object and let a purchase that never succeeded be recorded as such.
const CHARGE_EVENTS: [&str; 6] = [
    "charge.succeeded",
    "charge.updated",
    "charge.captured",
    "charge.refunded",
    "charge.pending",
    "charge.failed",
];
const PAYMENT_INTENT_EVENTS: [&str; 1] = ["payment_intent.succeeded"];
/// Payout events; `payout.updated` carries the payout's new status too.
const PAYOUT_EVENTS: [&str; 4] = [
    "payout.paid",
    "payout.failed",
    "payout.canceled",
    "payout.updated",
];
const TRANSFER_CREATED: &str = "transfer.created";
const ACCOUNT_UPDATED: &str = "account.updated";

#[derive(Debug, Deserialize)]
struct Event<'a> {
    id: String,
    #[serde(default)]
    object: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    /// The connected account, on Connect events.
    #[serde(default)]
    account: Option<String>,
    #[serde(borrow)]
    data: EventData<'a>,
}

#[derive(Debug, Deserialize)]
struct EventData<'a> {
    /// Kept raw: its shape depends on the event type.
    #[serde(borrow)]
    object: &'a RawValue,
}

/// Only the ids, which is all ingress needs to key the event.
#[derive(Debug, Deserialize)]
struct ObjectHead {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    latest_charge: Option<serde_json::Value>,
    #[serde(default)]
    charges: Option<ChargeList>,
}

/// `charges` on payment intents of API versions before 2022-11-15, which
/// have no `latest_charge`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChargeList {
    #[serde(default)]
    pub data: Vec<serde_json::Value>,
}

/// The charge a payment intent's money moved with: `latest_charge`, or on
/// older API versions the newest entry of `charges.data`. Keying intents by
/// their charge makes charge and intent events about one purchase one
/// transaction.
fn charge_of(
    latest_charge: Option<&serde_json::Value>,
    charges: Option<&ChargeList>,
) -> Option<String> {
    latest_charge_id(latest_charge).or_else(|| {
        charges
            .and_then(|list| list.data.first())
            .and_then(|c| latest_charge_id(Some(c)))
    })
}

/// A Stripe `Charge`, as far as kvitto reads it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Charge {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub refunded: bool,
    /// Absent in old API versions, where every charge was captured.
    #[serde(default)]
    pub captured: Option<bool>,
    pub created: i64,
}

/// A Stripe `PaymentIntent`, as far as kvitto reads it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub created: i64,
    /// A charge id, or the expanded charge object.
    #[serde(default)]
    pub latest_charge: Option<serde_json::Value>,
    #[serde(default)]
    pub charges: Option<ChargeList>,
}

/// A Stripe `Transfer`, as far as settlement reads it.
#[derive(Debug, Deserialize)]
struct Transfer {
    id: String,
    #[serde(default)]
    transfer_group: Option<String>,
}

/// A Stripe `Account`, as far as settlement reads it.
#[derive(Debug, Deserialize)]
struct Account {
    id: String,
    #[serde(default)]
    charges_enabled: bool,
    #[serde(default)]
    payouts_enabled: bool,
    #[serde(default)]
    details_submitted: bool,
}

/// One Stripe object's facts in kvitto's terms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Facts {
    pub transaction_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub state: PaymentState,
    pub occurred_at: DateTime<Utc>,
}

pub fn envelope_info(request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    let event = parse_event(request.body)?;
    let head: Option<ObjectHead> = serde_json::from_str(event.data.object.get()).ok();
    let partition_key = head
        .and_then(|head| charge_of(head.latest_charge.as_ref(), head.charges.as_ref()).or(head.id))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| event.id.clone());
    Ok(EnvelopeInfo {
        event_id: event.id,
        partition_key,
    })
}

pub fn decode(delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    let event = parse_event(delivery.body)?;
    let action = action(&event)?;
    Ok(DecodedEvent {
        event_id: event.id,
        event_type: event.event_type,
        action,
    })
}

fn action(event: &Event<'_>) -> Result<EventAction, DecodeError> {
    if let Some(signal) = settlement_signal(event)? {
        return Ok(EventAction::Settlement(signal));
    }
    let object = event.data.object.get();
    let facts = if CHARGE_EVENTS.contains(&event.event_type.as_str()) {
        charge_facts(&parse_object::<Charge>(object, "charge")?)?
    } else if PAYMENT_INTENT_EVENTS.contains(&event.event_type.as_str()) {
        payment_intent_facts(&parse_object::<PaymentIntent>(object, "payment intent")?)?
    } else {
        return Ok(EventAction::Ignore {
            reason: "event type not processed",
        });
    };
    let source_version = event
        .created
        .checked_mul(1000)
        .ok_or_else(|| DecodeError::new("event created is out of range"))?;
    Ok(EventAction::Purchase(Claim {
        transaction_ref: facts.transaction_ref,
        amount_minor: Some(facts.amount_minor),
        currency: Some(facts.currency),
        state: Some(facts.state),
        occurred_at: Some(facts.occurred_at),
        source_version,
        // Stripe charges name no till; Terminal locations live elsewhere.
        location_ref: None,
        line_items: Vec::new(),
    }))
}

/// The signal a payout, transfer or account event gives; `None` for
/// every other event type.
fn settlement_signal(event: &Event<'_>) -> Result<Option<SettlementSignal>, DecodeError> {
    let object = event.data.object.get();
    let event_type = event.event_type.as_str();
    let signal = if PAYOUT_EVENTS.contains(&event_type) {
        let payout: Payout = parse_object(object, "payout")?;
        SettlementSignal::Payout {
            rail: Rail::Stripe,
            account: event.account.clone(),
            status: payout_status(&payout).map_err(DecodeError::new)?,
        }
    } else if event_type == TRANSFER_CREATED {
        let transfer: Transfer = parse_object(object, "transfer")?;
        SettlementSignal::Transfer {
            transfer_ref: transfer.id,
            transfer_group: transfer.transfer_group,
        }
    } else if event_type == ACCOUNT_UPDATED {
        let account: Account = parse_object(object, "account")?;
        SettlementSignal::Account {
            account: account.id,
            charges_enabled: account.charges_enabled,
            payouts_enabled: account.payouts_enabled,
            details_submitted: account.details_submitted,
        }
    } else {
        return Ok(None);
    };
    Ok(Some(signal))
}

fn parse_event(body: &[u8]) -> Result<Event<'_>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::new("body is not UTF-8"))?;
    let event: Event<'_> = serde_json::from_str(text)
        .map_err(|e| DecodeError::new(format!("body is not a stripe event: {e}")))?;
    if event.id.is_empty() {
        return Err(DecodeError::new("event id is empty"));
    }
    if event
        .object
        .as_deref()
        .is_some_and(|object| object != "event")
    {
        return Err(DecodeError::new("body is not a stripe event object"));
    }
    Ok(event)
}

fn parse_object<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::new(format!("malformed {what}: {e}")))
}

/// A charge's facts. `refunded` is true only for a full refund; a charge
/// authorised but never captured is pending, and one released uncaptured
/// (refunded without capture) is canceled.
pub(crate) fn charge_facts(charge: &Charge) -> Result<Facts, DecodeError> {
    let captured = charge.captured.unwrap_or(true);
    let state = match (charge.status.as_str(), charge.refunded, captured) {
        (_, true, false) => PaymentState::Canceled,
        (_, true, true) => PaymentState::Refunded,
        ("succeeded", false, true) => PaymentState::Completed,
        ("succeeded", false, false) | ("pending", false, _) => PaymentState::Pending,
        ("failed", false, _) => PaymentState::Failed,
        _ => return Err(DecodeError::new("unknown stripe charge status")),
    };
    facts(
        &charge.id,
        charge.amount,
        &charge.currency,
        state,
        charge.created,
    )
}

/// A payment intent's facts, keyed by its latest charge when it has one.
pub(crate) fn payment_intent_facts(intent: &PaymentIntent) -> Result<Facts, DecodeError> {
    let state = match intent.status.as_str() {
        "succeeded" => PaymentState::Completed,
        "canceled" => PaymentState::Canceled,
        "processing"
        | "requires_capture"
        | "requires_payment_method"
        | "requires_confirmation"
        | "requires_action" => PaymentState::Pending,
        _ => return Err(DecodeError::new("unknown stripe payment intent status")),
    };
    let transaction_ref = charge_of(intent.latest_charge.as_ref(), intent.charges.as_ref())
        .unwrap_or_else(|| intent.id.clone());
    facts(
        &transaction_ref,
        intent.amount,
        &intent.currency,
        state,
        intent.created,
    )
}

fn facts(
    id: &str,
    amount_minor: i64,
    currency: &str,
    state: PaymentState,
    created: i64,
) -> Result<Facts, DecodeError> {
    if id.is_empty() {
        return Err(DecodeError::new("object id is empty"));
    }
    let currency =
        money::normalize_currency(currency).map_err(|e| DecodeError::new(e.to_string()))?;
    let occurred_at = DateTime::from_timestamp(created, 0)
        .ok_or_else(|| DecodeError::new("created is out of range"))?;
    Ok(Facts {
        transaction_ref: id.to_string(),
        amount_minor,
        currency,
        state,
        occurred_at,
    })
}

/// The charge id in `latest_charge`, which is an id or an expanded object.
fn latest_charge_id(latest_charge: Option<&serde_json::Value>) -> Option<String> {
    let value = latest_charge?;
    let id = value.as_str().or_else(|| value.get("id")?.as_str())?;
    id.starts_with("ch_").then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;
    use crate::settlement::rails::PayoutStatus;

    #[test]
    fn old_api_payment_intent_is_keyed_by_its_charge_from_charges_data() {
        let body = br#"{"id":"evt_pi","object":"event","type":"payment_intent.succeeded","created":1772442903,
            "data":{"object":{"id":"pi_dup","object":"payment_intent","amount":1000,"currency":"sek",
            "status":"succeeded","created":1772442900,"charges":{"object":"list","data":[{"id":"ch_dup"}]}}}}"#;
        let delivery = RawDelivery {
            body,
            headers: &[],
            query: "",
        };
        let EventAction::Purchase(claim) = decode(&delivery).unwrap().action else {
            panic!("purchase")
        };
        assert_eq!(claim.transaction_ref, "ch_dup");
        let headers = actix_web::http::header::HeaderMap::new();
        let request = WebhookRequest {
            headers: &headers,
            body,
            query: "",
        };
        assert_eq!(envelope_info(&request).unwrap().partition_key, "ch_dup");
    }

    /// A `charge.succeeded` shaped like Stripe's own sample events.
    const CHARGE_SUCCEEDED: &str = r#"{
      "id": "evt_3OqLbW2eZvKYlo2C1tOmzlBq",
      "object": "event",
      "api_version": "2024-06-20",
      "created": 1772442903,
      "data": {
        "object": {
          "id": "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA",
          "object": "charge",
          "amount": 24900,
          "amount_captured": 24900,
          "amount_refunded": 0,
          "captured": true,
          "created": 1772442901,
          "currency": "sek",
          "livemode": false,
          "paid": true,
          "payment_intent": "pi_3OqLbW2eZvKYlo2C1mFqOe3k",
          "refunded": false,
          "status": "succeeded"
        }
      },
      "livemode": false,
      "pending_webhooks": 1,
      "request": {"id": "req_8m1xKJx6r6bQpL", "idempotency_key": "5b1c7f3e-8f0e-4d55-9d0a-2f8b1e4c7a10"},
      "type": "charge.succeeded"
    }"#;

    const PAYMENT_INTENT_SUCCEEDED: &str = r#"{
      "id": "evt_3OqLbW2eZvKYlo2C1a2b3c4d",
      "object": "event",
      "created": 1772442904,
      "data": {"object": {
        "id": "pi_3OqLbW2eZvKYlo2C1mFqOe3k",
        "object": "payment_intent",
        "amount": 24900,
        "amount_received": 24900,
        "created": 1772442900,
        "currency": "sek",
        "latest_charge": "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA",
        "status": "succeeded"
      }},
      "livemode": false,
      "type": "payment_intent.succeeded"
    }"#;

    fn delivery(body: &str) -> Result<DecodedEvent, DecodeError> {
        testing::decode_body(ProviderKind::Stripe, body.as_bytes())
    }

    fn claim(body: &str) -> Claim {
        testing::purchase_claim(delivery(body).unwrap())
    }

    fn info(body: &str) -> EnvelopeInfo {
        let headers = actix_web::http::header::HeaderMap::new();
        envelope_info(&WebhookRequest {
            headers: &headers,
            body: body.as_bytes(),
            query: "",
        })
        .unwrap()
    }

    #[test]
    fn stripe_charge_succeeded_becomes_a_claim() {
        let event = delivery(CHARGE_SUCCEEDED).unwrap();
        assert_eq!(event.event_id, "evt_3OqLbW2eZvKYlo2C1tOmzlBq");
        assert_eq!(event.event_type, "charge.succeeded");
        assert_eq!(
            claim(CHARGE_SUCCEEDED),
            Claim {
                transaction_ref: "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA".into(),
                amount_minor: Some(24_900),
                currency: Some("SEK".into()),
                state: Some(PaymentState::Completed),
                occurred_at: Some(Utc.timestamp_opt(1_772_442_901, 0).unwrap()),
                source_version: 1_772_442_903_000,
                location_ref: None,
                line_items: vec![],
            }
        );
    }

    #[test]
    fn stripe_zero_decimal_amounts_are_kept_as_sent() {
        let body = CHARGE_SUCCEEDED
            .replace("\"sek\"", "\"jpy\"")
            .replace("24900,", "1500,");
        let claim = claim(&body);
        assert_eq!(claim.amount_minor, Some(1_500));
        assert_eq!(claim.currency, Some("JPY".into()));
    }

    #[test]
    fn stripe_charge_states_follow_status_refund_and_capture() {
        let with = |status: &str, refunded: bool, captured: bool| {
            CHARGE_SUCCEEDED
                .replace(
                    "\"status\": \"succeeded\"",
                    &format!("\"status\": \"{status}\""),
                )
                .replace("\"refunded\": false", &format!("\"refunded\": {refunded}"))
                .replace("\"captured\": true", &format!("\"captured\": {captured}"))
        };
        let cases = [
            (with("succeeded", false, true), PaymentState::Completed),
            (with("succeeded", false, false), PaymentState::Pending),
            (with("pending", false, false), PaymentState::Pending),
            (with("failed", false, false), PaymentState::Failed),
            (with("succeeded", true, true), PaymentState::Refunded),
            (with("succeeded", true, false), PaymentState::Canceled),
        ];
        for (body, state) in cases {
            assert_eq!(claim(&body).state, Some(state), "{state:?}");
        }
        assert!(delivery(&with("settled", false, true)).is_err());
    }

    #[test]
    fn stripe_charge_refunded_event_is_a_refunded_claim() {
        let body = CHARGE_SUCCEEDED
            .replace(
                "\"type\": \"charge.succeeded\"",
                "\"type\": \"charge.refunded\"",
            )
            .replace("\"refunded\": false", "\"refunded\": true");
        assert_eq!(claim(&body).state, Some(PaymentState::Refunded));
    }

    #[test]
    fn stripe_payment_intent_is_keyed_by_its_latest_charge() {
        let direct = claim(PAYMENT_INTENT_SUCCEEDED);
        assert_eq!(direct.transaction_ref, "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA");
        assert_eq!(direct.state, Some(PaymentState::Completed));
        assert_eq!(direct.amount_minor, Some(24_900));
        assert_eq!(
            info(PAYMENT_INTENT_SUCCEEDED).partition_key,
            "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA"
        );

        let expanded = PAYMENT_INTENT_SUCCEEDED.replace(
            "\"latest_charge\": \"ch_3OqLbW2eZvKYlo2C1ZQ7d0pA\"",
            "\"latest_charge\": {\"id\": \"ch_3OqLbW2eZvKYlo2C1ZQ7d0pA\", \"object\": \"charge\"}",
        );
        assert_eq!(
            claim(&expanded).transaction_ref,
            "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA"
        );

        let without = PAYMENT_INTENT_SUCCEEDED
            .replace("\"latest_charge\": \"ch_3OqLbW2eZvKYlo2C1ZQ7d0pA\",", "");
        assert_eq!(
            claim(&without).transaction_ref,
            "pi_3OqLbW2eZvKYlo2C1mFqOe3k"
        );
        assert_eq!(info(&without).partition_key, "pi_3OqLbW2eZvKYlo2C1mFqOe3k");
    }

    #[test]
    fn stripe_envelope_info_keys_by_charge_id() {
        let info = info(CHARGE_SUCCEEDED);
        assert_eq!(info.event_id, "evt_3OqLbW2eZvKYlo2C1tOmzlBq");
        assert_eq!(info.partition_key, "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA");
    }

    #[test]
    fn stripe_other_event_types_are_ignored() {
        let body = r#"{"id":"evt_1","object":"event","type":"balance.available","created":1772442903,
            "livemode":false,"data":{"object":{"id":"po_1","object":"balance","amount":5}}}"#;
        assert_eq!(
            delivery(body).unwrap().action,
            EventAction::Ignore {
                reason: "event type not processed"
            }
        );
        assert_eq!(info(body).partition_key, "po_1");
    }

    fn connect_event(event_type: &str, account: &str, object: &str) -> String {
        format!(
            r#"{{"id":"evt_c","object":"event","type":"{event_type}","created":1772442903,
            "account":"{account}","livemode":false,"data":{{"object":{object}}}}}"#
        )
    }

    const PAYOUT: &str = r#"{"id":"po_1","object":"payout","amount":1250,"currency":"sek",
        "status":"STATUS","failure_code":null,"failure_message":null}"#;

    #[test]
    fn stripe_payout_events_become_payout_signals() {
        let cases = [
            (
                "payout.paid",
                "paid",
                PayoutStatus::Paid {
                    provider_ref: "po_1".into(),
                },
            ),
            (
                "payout.updated",
                "in_transit",
                PayoutStatus::InFlight {
                    provider_ref: "po_1".into(),
                },
            ),
            (
                "payout.canceled",
                "canceled",
                PayoutStatus::Failed {
                    provider_ref: Some("po_1".into()),
                    reason: "canceled".into(),
                },
            ),
        ];
        for (event_type, status, expected) in cases {
            let body = connect_event(event_type, "acct_1", &PAYOUT.replace("STATUS", status));
            assert_eq!(
                delivery(&body).unwrap().action,
                EventAction::Settlement(SettlementSignal::Payout {
                    rail: Rail::Stripe,
                    account: Some("acct_1".into()),
                    status: expected,
                }),
                "{event_type}"
            );
        }
    }

    #[test]
    fn stripe_failed_payout_event_carries_the_failure_code() {
        let payout = PAYOUT.replace("STATUS", "failed").replace(
            "\"failure_code\":null",
            "\"failure_code\":\"account_closed\"",
        );
        let body = connect_event("payout.failed", "acct_1", &payout);
        let EventAction::Settlement(SettlementSignal::Payout { status, .. }) =
            delivery(&body).unwrap().action
        else {
            panic!("payout signal");
        };
        assert_eq!(
            status,
            PayoutStatus::Failed {
                provider_ref: Some("po_1".into()),
                reason: "account_closed".into()
            }
        );
    }

    #[test]
    fn stripe_transfer_and_account_events_become_signals() {
        let transfer = r#"{"id":"tr_1","object":"transfer","amount":1250,"transfer_group":"g-1"}"#;
        assert_eq!(
            delivery(&connect_event("transfer.created", "acct_1", transfer))
                .unwrap()
                .action,
            EventAction::Settlement(SettlementSignal::Transfer {
                transfer_ref: "tr_1".into(),
                transfer_group: Some("g-1".into()),
            })
        );
        let account = r#"{"id":"acct_1","object":"account","charges_enabled":false,
            "payouts_enabled":true,"details_submitted":true}"#;
        assert_eq!(
            delivery(&connect_event("account.updated", "acct_1", account))
                .unwrap()
                .action,
            EventAction::Settlement(SettlementSignal::Account {
                account: "acct_1".into(),
                charges_enabled: false,
                payouts_enabled: true,
                details_submitted: true,
            })
        );
    }

    #[test]
    fn stripe_malformed_payout_events_are_decode_errors() {
        let unknown = connect_event("payout.paid", "acct_1", &PAYOUT.replace("STATUS", "lost"));
        assert!(delivery(&unknown).is_err());
        let no_id = connect_event("payout.paid", "acct_1", r#"{"status":"paid"}"#);
        assert!(delivery(&no_id).is_err());
    }

    #[test]
    fn stripe_amounts_must_be_integers() {
        for bad in ["24900.5", "\"24900\"", "2.49e4", "99999999999999999999"] {
            let body = CHARGE_SUCCEEDED.replace("\"amount\": 24900", &format!("\"amount\": {bad}"));
            assert!(delivery(&body).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn stripe_bad_bodies_are_decode_errors_never_panics() {
        let bodies: [&[u8]; 9] = [
            b"",
            b"\xff\xfe",
            b"not json",
            b"[]",
            b"{}",
            br#"{"id":"","object":"event","type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","object":"charge","type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"charge.succeeded","created":1,"data":{"object":{"id":"ch_1"}}}"#,
            br#"{"id":"evt_1","type":"charge.succeeded","created":9223372036854775807,"data":{"object":{"id":"ch_1","amount":1,"currency":"sek","status":"succeeded","created":1}}}"#,
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
}
