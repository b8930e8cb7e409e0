//! Decoding of Swish payment request callbacks.
//!
//! Swish calls the `callbackUrl` of a payment request once the request
//! reaches a final state, with the payment request itself as the JSON body
//! (Swish Commerce API, "Payment request callback"). Nothing in it is signed,
//! so what is decoded here is only a claim: kvitto asks the API before it
//! trusts any of it (see `api.rs`).
//!
//! Guarantees kept here: the amount never passes through a float (Swish
//! sends it as a string in requests and as a JSON number in answers; both are
//! read from their own digits), and the payer's phone number (`payerAlias`)
//! is never read, so it cannot end up in a claim, a log line or an error.
//!
//! Swish has no event id. A callback is identified by the payment request id
//! and its status (`"{id}:{status}"`): a repeated callback deduplicates, a
//! change of status is a new event.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::canonical::PaymentState;
use crate::money;
use crate::providers::{
    Claim, DecodeError, DecodedEvent, EnvelopeInfo, EventAction, RawDelivery, WebhookRequest,
};

/// A payment request id is 32 upper-case hexadecimal characters.
pub(crate) const PAYMENT_REQUEST_ID_CHARS: usize = 32;

/// Statuses are short upper-case words; anything longer is not Swish.
const MAX_STATUS_CHARS: usize = 32;

/// The part of a payment request (callback body or API answer) kvitto reads.
/// Fields it does not name, `payerAlias` and `message` among them, are
/// skipped unread.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PaymentRequest {
    pub id: String,
    #[serde(default)]
    pub payee_alias: Option<String>,
    /// A decimal string or a JSON number, kept as raw JSON text.
    pub amount: Box<RawValue>,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub date_created: Option<String>,
    #[serde(default)]
    pub date_paid: Option<String>,
    /// Present only on refund callbacks.
    #[serde(default)]
    pub original_payment_reference: Option<String>,
    /// Present only on payout callbacks.
    #[serde(default, rename = "payoutInstructionUUID")]
    pub payout_instruction_uuid: Option<String>,
}

/// What a payment request says, checked and converted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PaymentFacts {
    pub transaction_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub state: PaymentState,
    pub occurred_at: DateTime<Utc>,
    pub source_version: i64,
    pub location_ref: Option<String>,
}

impl PaymentRequest {
    /// Checks every field kvitto uses; the error is a short reason.
    pub(crate) fn facts(&self) -> Result<PaymentFacts, String> {
        if !is_payment_request_id(&self.id) {
            return Err("id is not 32 upper-case hex characters".into());
        }
        let state = state_of(&self.status).ok_or("unknown payment request status")?;
        let currency = money::normalize_currency(&self.currency).map_err(|e| e.to_string())?;
        let amount_minor =
            money::json_amount_to_minor(&self.amount, &currency).map_err(|e| e.to_string())?;
        let created = self.date_created.as_deref().ok_or("dateCreated missing")?;
        let occurred_at = parse_time(created).ok_or("dateCreated is not an ISO 8601 instant")?;
        let paid_at = match self.date_paid.as_deref() {
            Some(paid) => Some(parse_time(paid).ok_or("datePaid is not an ISO 8601 instant")?),
            None => None,
        };
        // Swish gives no time for DECLINED, ERROR or CANCELLED, so those
        // version at dateCreated. Swish never moves a PAID request to any of
        // them (money goes back through a separate refund), so no newer state
        // can be ordered below an older one.
        let source_version = paid_at.unwrap_or(occurred_at).timestamp_millis();
        Ok(PaymentFacts {
            transaction_ref: self.id.clone(),
            amount_minor,
            currency,
            state,
            occurred_at,
            source_version,
            location_ref: self.payee_alias.clone().filter(|alias| !alias.is_empty()),
        })
    }
}

/// The payment request id and status: enough to key the callback on the bus.
#[derive(Debug, Deserialize)]
struct CallbackKey {
    id: String,
    status: String,
}

pub fn envelope_info(request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    let key: CallbackKey = parse_json(request.body)?;
    if !is_payment_request_id(&key.id) {
        return Err(DecodeError::new(
            "swish callback id is not 32 upper-case hex characters",
        ));
    }
    // Refund callbacks carry statuses (DEBITED) that payment requests do not,
    // so only the shape of the status is checked here; `decode` sorts them.
    if !is_status_word(&key.status) {
        return Err(DecodeError::new(
            "swish callback status is not an upper-case word",
        ));
    }
    Ok(EnvelopeInfo {
        event_id: event_id(&key.id, &key.status),
        partition_key: key.id,
    })
}

pub fn decode(delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    let request: PaymentRequest = parse_json(delivery.body)?;
    if !is_payment_request_id(&request.id) || !is_status_word(&request.status) {
        return Err(DecodeError::new("swish callback id or status malformed"));
    }
    let event_id = event_id(&request.id, &request.status);
    let event_type = format!("paymentrequest.{}", request.status.to_ascii_lowercase());
    if request.original_payment_reference.is_some() {
        let reason = "swish refund callbacks are not processed";
        return Ok(DecodedEvent {
            event_id,
            event_type,
            action: EventAction::Ignore { reason },
        });
    }
    if request.payout_instruction_uuid.is_some() {
        let reason = "swish payout callbacks are not processed";
        return Ok(DecodedEvent {
            event_id,
            event_type,
            action: EventAction::Ignore { reason },
        });
    }
    let facts = request
        .facts()
        .map_err(|reason| DecodeError::new(format!("swish callback: {reason}")))?;
    let claim = Claim {
        transaction_ref: facts.transaction_ref,
        amount_minor: Some(facts.amount_minor),
        currency: Some(facts.currency),
        state: Some(facts.state),
        occurred_at: Some(facts.occurred_at),
        source_version: facts.source_version,
        location_ref: facts.location_ref,
        line_items: Vec::new(),
    };
    Ok(DecodedEvent {
        event_id,
        event_type,
        action: EventAction::Purchase(claim),
    })
}

/// Swish's statuses in kvitto's terms.
pub(crate) fn state_of(status: &str) -> Option<PaymentState> {
    match status {
        "CREATED" => Some(PaymentState::Pending),
        "PAID" => Some(PaymentState::Completed),
        "DECLINED" | "ERROR" => Some(PaymentState::Failed),
        "CANCELLED" => Some(PaymentState::Canceled),
        _ => None,
    }
}

pub(crate) fn is_payment_request_id(id: &str) -> bool {
    id.len() == PAYMENT_REQUEST_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Swish writes `2026-03-01T10:15:30.123Z`; older answers use an offset
/// without a colon (`+0100`). A time without an offset is refused rather
/// than guessed to be Swedish.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|instant| instant.with_timezone(&Utc))
}

fn event_id(id: &str, status: &str) -> String {
    format!("{id}:{status}")
}

fn is_status_word(status: &str) -> bool {
    !status.is_empty()
        && status.len() <= MAX_STATUS_CHARS
        && status.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| DecodeError::new("swish callback body is not UTF-8"))?;
    serde_json::from_str(text)
        .map_err(|e| DecodeError::new(format!("swish callback body is not a payment request: {e}")))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;
    use chrono::TimeZone;

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;

    /// A PAID callback shaped like the example in Swish's integration guide.
    const PAID: &str = r#"{
        "id": "AB23D7406ECE4542A80152D26E0E89DA",
        "payeePaymentReference": "0123456789",
        "paymentReference": "6D6CD7406ECE4542A80152D909EF9F6B",
        "callbackUrl": "https://kvitto.example.se/webhooks/swish/swish-token",
        "payerAlias": "46712345678",
        "payeeAlias": "1231181189",
        "amount": "149.50",
        "currency": "SEK",
        "message": "Glass och kaffe – tack!",
        "status": "PAID",
        "dateCreated": "2026-03-01T10:15:30.123Z",
        "datePaid": "2026-03-01T10:15:42.456Z",
        "errorCode": null,
        "errorMessage": null
    }"#;

    fn request(body: &[u8]) -> Result<EnvelopeInfo, DecodeError> {
        let headers = HeaderMap::new();
        envelope_info(&WebhookRequest {
            headers: &headers,
            body,
            query: "",
        })
    }

    fn delivery(body: &[u8]) -> Result<DecodedEvent, DecodeError> {
        testing::decode_body(ProviderKind::Swish, body)
    }

    fn claim_of(event: DecodedEvent) -> Claim {
        match event.action {
            EventAction::Purchase(claim) => claim,
            other => panic!("expected a purchase, got {other:?}"),
        }
    }

    #[test]
    fn swish_paid_callback_decodes_to_a_completed_claim() {
        let event = delivery(PAID.as_bytes()).unwrap();
        assert_eq!(event.event_id, "AB23D7406ECE4542A80152D26E0E89DA:PAID");
        assert_eq!(event.event_type, "paymentrequest.paid");
        let claim = claim_of(event);
        let created = Utc.with_ymd_and_hms(2026, 3, 1, 10, 15, 30).unwrap()
            + chrono::Duration::milliseconds(123);
        let paid = Utc.with_ymd_and_hms(2026, 3, 1, 10, 15, 42).unwrap()
            + chrono::Duration::milliseconds(456);
        assert_eq!(claim.transaction_ref, "AB23D7406ECE4542A80152D26E0E89DA");
        assert_eq!(claim.amount_minor, Some(14950));
        assert_eq!(claim.currency.as_deref(), Some("SEK"));
        assert_eq!(claim.state, Some(PaymentState::Completed));
        assert_eq!(claim.occurred_at, Some(created));
        assert_eq!(claim.source_version, paid.timestamp_millis());
        assert_eq!(claim.location_ref.as_deref(), Some("1231181189"));
        assert!(claim.line_items.is_empty());
    }

    #[test]
    fn swish_claim_never_carries_the_payer_phone_number() {
        let claim = claim_of(delivery(PAID.as_bytes()).unwrap());
        assert!(!format!("{claim:?}").contains("46712345678"));
    }

    #[test]
    fn swish_amount_as_json_number_is_read_from_its_digits() {
        let body = PAID.replace(r#""amount": "149.50""#, r#""amount": 149.50"#);
        assert_eq!(
            claim_of(delivery(body.as_bytes()).unwrap()).amount_minor,
            Some(14950)
        );
        let body = PAID.replace(r#""amount": "149.50""#, r#""amount": 0.1"#);
        assert_eq!(
            claim_of(delivery(body.as_bytes()).unwrap()).amount_minor,
            Some(10)
        );
    }

    #[test]
    fn swish_ambiguous_amounts_are_rejected() {
        for bad in [
            r#""1e3""#,
            "1e3",
            r#""10,00""#,
            r#""1.001""#,
            "null",
            "true",
            r#"{}"#,
        ] {
            let body = PAID.replace(r#""149.50""#, bad);
            assert!(delivery(body.as_bytes()).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn swish_statuses_map_to_payment_states() {
        let cases = [
            ("CREATED", PaymentState::Pending),
            ("DECLINED", PaymentState::Failed),
            ("ERROR", PaymentState::Failed),
            ("CANCELLED", PaymentState::Canceled),
        ];
        for (status, state) in cases {
            let body = PAID
                .replace(r#""status": "PAID""#, &format!(r#""status": "{status}""#))
                .replace(r#""datePaid": "2026-03-01T10:15:42.456Z","#, "");
            let event = delivery(body.as_bytes()).unwrap();
            assert_eq!(
                event.event_id,
                format!("AB23D7406ECE4542A80152D26E0E89DA:{status}")
            );
            let claim = claim_of(event);
            assert_eq!(claim.state, Some(state), "{status}");
            // Without datePaid the version falls back to dateCreated.
            assert_eq!(
                claim.source_version,
                claim.occurred_at.unwrap().timestamp_millis()
            );
        }
    }

    #[test]
    fn swish_unknown_status_is_a_decode_error() {
        let body = PAID.replace(r#""PAID""#, r#""SETTLED""#);
        assert!(delivery(body.as_bytes()).is_err());
    }

    #[test]
    fn swish_repeated_callback_has_the_same_event_id_and_new_status_a_new_one() {
        let first = request(PAID.as_bytes()).unwrap();
        assert_eq!(first, request(PAID.as_bytes()).unwrap());
        assert_eq!(first.partition_key, "AB23D7406ECE4542A80152D26E0E89DA");
        let declined = PAID.replace(r#""PAID""#, r#""DECLINED""#);
        let second = request(declined.as_bytes()).unwrap();
        assert_ne!(first.event_id, second.event_id);
        assert_eq!(first.partition_key, second.partition_key);
    }

    #[test]
    fn swish_non_utf8_or_invalid_json_is_a_decode_error() {
        let mut not_utf8 = PAID.as_bytes().to_vec();
        not_utf8[40] = 0xff;
        for body in [
            &not_utf8[..],
            b"",
            b"{",
            b"[]",
            b"null",
            b"{\"id\": 5}",
            &[0xc3, 0x28],
        ] {
            assert!(request(body).is_err(), "{body:?} was accepted at ingress");
            assert!(delivery(body).is_err(), "{body:?} was decoded");
        }
        assert_eq!(
            request(&not_utf8).unwrap_err().0,
            "swish callback body is not UTF-8"
        );
    }

    #[test]
    fn swish_malformed_ids_and_statuses_are_refused_at_ingress() {
        for id in [
            "ab23d7406ece4542a80152d26e0e89da",
            "AB23",
            "../../admin",
            "",
        ] {
            let body = PAID.replace("AB23D7406ECE4542A80152D26E0E89DA", id);
            assert!(request(body.as_bytes()).is_err(), "{id:?} was accepted");
        }
        let long_status = "X".repeat(MAX_STATUS_CHARS + 1);
        for status in ["paid", "", "PAID:1", long_status.as_str()] {
            let body = PAID.replace(r#""PAID""#, &format!("{status:?}"));
            assert!(request(body.as_bytes()).is_err(), "{status:?} was accepted");
        }
    }

    #[test]
    fn swish_unicode_message_and_escapes_decode() {
        let body = PAID.replace(
            "Glass och kaffe – tack!",
            r"Gl\u00e4ss p\u00e5 \u00f6n \ud83c\udf66",
        );
        assert_eq!(
            claim_of(delivery(body.as_bytes()).unwrap()).amount_minor,
            Some(14950)
        );
    }

    #[test]
    fn swish_refund_and_payout_callbacks_are_ignored() {
        let refund = PAID.replace(
            r#""payeePaymentReference""#,
            r#""originalPaymentReference": "6D6CD7406ECE4542A80152D909EF9F6B", "x""#,
        );
        let event = delivery(refund.as_bytes()).unwrap();
        assert!(matches!(event.action, EventAction::Ignore { .. }));
        let payout = PAID.replace(
            r#""payeePaymentReference""#,
            r#""payoutInstructionUUID": "E4D773858AF5459B96ABCA4B9DBFF94D", "x""#,
        );
        assert!(matches!(
            delivery(payout.as_bytes()).unwrap().action,
            EventAction::Ignore { .. }
        ));
    }

    #[test]
    fn swish_times_with_compact_offsets_parse_and_naive_times_do_not() {
        let expected = Utc.with_ymd_and_hms(2015, 2, 19, 21, 1, 53).unwrap();
        assert_eq!(parse_time("2015-02-19T22:01:53+01:00"), Some(expected));
        assert_eq!(parse_time("2015-02-19T22:01:53+0100"), Some(expected));
        assert_eq!(parse_time("2015-02-19T22:01:53"), None);
        assert_eq!(parse_time(""), None);
        let body = PAID.replace("2026-03-01T10:15:42.456Z", "yesterday");
        assert!(delivery(body.as_bytes()).is_err());
    }
}
