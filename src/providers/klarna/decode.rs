//! Decoding of Klarna Checkout pushes.
//!
//! Klarna's push is a `POST` to the merchant's push URL with the order id
//! substituted into it and an empty body (Klarna Checkout docs, "Confirm the
//! purchase"). kvitto registers its push URL as
//! `/webhooks/klarna/{integration}?order_id={checkout.order.id}`, so the
//! order id is read from the query string; the body is never looked at,
//! whatever it holds.
//!
//! Klarna repeats the push until the order is acknowledged, and every repeat
//! is the same event (`push:{order_id}`): the first one is processed, the
//! rest deduplicate. The claim carries only the order id; the order itself
//! comes from the order management API (see `api.rs`).

use crate::providers::{
    Claim, DecodeError, DecodedEvent, EnvelopeInfo, EventAction, RawDelivery, WebhookRequest,
};

/// The query parameter kvitto's push URL carries the order id in.
pub const ORDER_ID_PARAM: &str = "order_id";

/// Klarna order ids are UUIDs (36 characters); the margin allows for other
/// id formats without letting an arbitrary string through.
pub(crate) const MAX_ORDER_ID_CHARS: usize = 64;

const EVENT_TYPE: &str = "checkout.push";

pub fn envelope_info(request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    let order_id = order_id_from_query(request.query)?;
    Ok(EnvelopeInfo {
        event_id: event_id(&order_id),
        partition_key: order_id,
    })
}

pub fn decode(delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    let order_id = order_id_from_query(delivery.query)?;
    let claim = Claim {
        transaction_ref: order_id.clone(),
        ..Claim::default()
    };
    Ok(DecodedEvent {
        event_id: event_id(&order_id),
        event_type: EVENT_TYPE.into(),
        action: EventAction::Purchase(claim),
    })
}

/// The one `order_id` in a raw query string, percent-decoded and checked.
pub(crate) fn order_id_from_query(query: &str) -> Result<String, DecodeError> {
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != ORDER_ID_PARAM {
            continue;
        }
        if found.is_some() {
            return Err(DecodeError::new(
                "klarna push names order_id more than once",
            ));
        }
        found = Some(value);
    }
    let raw = found.ok_or_else(|| DecodeError::new("klarna push has no order_id"))?;
    let order_id = percent_decode(raw)
        .ok_or_else(|| DecodeError::new("klarna push order_id is badly percent-encoded"))?;
    if !is_order_id(&order_id) {
        return Err(DecodeError::new(
            "klarna push order_id is empty, too long or not an id",
        ));
    }
    Ok(order_id)
}

/// Letters, digits and `-` (UUIDs), up to [`MAX_ORDER_ID_CHARS`]. The id
/// ends up in an API path, so nothing that could change the path passes.
pub(crate) fn is_order_id(order_id: &str) -> bool {
    !order_id.is_empty()
        && order_id.len() <= MAX_ORDER_ID_CHARS
        && order_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn event_id(order_id: &str) -> String {
    format!("push:{order_id}")
}

/// `%XX` escapes to bytes; `None` for a broken escape or a result that is
/// not UTF-8. `+` is left alone: it cannot occur in a valid id anyway.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte != b'%' {
            bytes.push(byte);
            rest = tail;
            continue;
        }
        let hex = tail.get(..2)?;
        // `from_str_radix` would take a sign (`%+1`): only two hex digits pass.
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
        rest = tail.get(2..)?;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;

    use super::*;

    const ORDER: &str = "f3392f8b-6116-4073-ab96-e330819e2c07";

    fn at_ingress(query: &str, body: &[u8]) -> Result<EnvelopeInfo, DecodeError> {
        let headers = HeaderMap::new();
        envelope_info(&WebhookRequest {
            headers: &headers,
            body,
            query,
        })
    }

    fn in_processing(query: &str, body: &[u8]) -> Result<DecodedEvent, DecodeError> {
        decode(&RawDelivery {
            body,
            headers: &[],
            query,
        })
    }

    #[test]
    fn klarna_push_is_keyed_by_its_order_id() {
        let info = at_ingress(&format!("order_id={ORDER}"), b"").unwrap();
        assert_eq!(info.event_id, format!("push:{ORDER}"));
        assert_eq!(info.partition_key, ORDER);
    }

    #[test]
    fn klarna_push_decodes_to_a_claim_with_only_the_order_id() {
        let event = in_processing(&format!("order_id={ORDER}"), b"").unwrap();
        assert_eq!(event.event_id, format!("push:{ORDER}"));
        assert_eq!(event.event_type, "checkout.push");
        let expected = Claim {
            transaction_ref: ORDER.into(),
            ..Claim::default()
        };
        assert_eq!(event.action, EventAction::Purchase(expected));
    }

    #[test]
    fn klarna_repeated_pushes_are_the_same_event() {
        let query = format!("order_id={ORDER}");
        assert_eq!(
            at_ingress(&query, b"").unwrap(),
            at_ingress(&query, b"").unwrap()
        );
        let first = in_processing(&query, b"").unwrap();
        assert_eq!(first, in_processing(&query, b"").unwrap());
    }

    #[test]
    fn klarna_ignores_any_body_content() {
        let query = format!("order_id={ORDER}");
        let expected = at_ingress(&query, b"").unwrap();
        let bodies: [&[u8]; 4] = [
            b"{not json",
            &[0xff, 0xfe, 0x00],
            b"{\"order_id\":\"other\"}",
            b"x",
        ];
        for body in bodies {
            assert_eq!(at_ingress(&query, body).unwrap(), expected, "{body:?}");
            let EventAction::Purchase(claim) = in_processing(&query, body).unwrap().action else {
                panic!("push was not a purchase");
            };
            assert_eq!(claim.transaction_ref, ORDER);
        }
    }

    #[test]
    fn klarna_order_id_is_percent_decoded_and_found_among_other_params() {
        let encoded = ORDER.replace('-', "%2D");
        let query = format!("sid=1&order_id={encoded}&x");
        assert_eq!(at_ingress(&query, b"").unwrap().partition_key, ORDER);
    }

    #[test]
    fn klarna_missing_empty_or_odd_order_ids_are_decode_errors() {
        let long = "a".repeat(MAX_ORDER_ID_CHARS + 1);
        let bad = [
            String::new(),
            "order=abc".into(),
            "order_id".into(),
            "order_id=".into(),
            format!("order_id={long}"),
            "order_id=..%2F..%2Fadmin".into(),
            "order_id=a/b".into(),
            "order_id=a%2".into(),
            "order_id=%".into(),
            "order_id=%zz".into(),
            "order_id=%ff%fe".into(),
            "order_id=%C3%A5".into(),
            "order_id=a+b".into(),
            "order_id=a%00b".into(),
            format!("order_id={ORDER}&order_id=other"),
        ];
        for query in &bad {
            assert!(
                at_ingress(query, b"").is_err(),
                "{query:?} was accepted at ingress"
            );
            assert!(in_processing(query, b"").is_err(), "{query:?} was decoded");
        }
    }

    #[test]
    fn percent_decoding_handles_multibyte_and_truncated_escapes() {
        assert_eq!(percent_decode("%C3%A5%2d1").as_deref(), Some("å-1"));
        assert_eq!(percent_decode("abc").as_deref(), Some("abc"));
        assert_eq!(percent_decode("ab%4"), None);
        assert_eq!(percent_decode("%é1"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
