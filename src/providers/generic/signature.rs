//! The generic adapter's signature: HMAC-SHA256 with a scheme the integration
//! configures, for point-of-sale systems kvitto has no dedicated module for.
//!
//! kvitto defines this scheme, so the integration config says where the
//! signature travels (`signature_header`), how it is written
//! (`signature_encoding`: lowercase hex by default, or standard base64) and
//! what it covers (`signed_payload`: the raw body by default, or the
//! `timestamp_header` value, a `.`, then the raw body). The guarantee: a body
//! is accepted only when one of the integration's `signing_secrets` produces
//! the signature over the exact bytes received, compared in constant time,
//! and, with a signed timestamp, only within `timestamp_tolerance_secs` of
//! now in either direction.

use chrono::{DateTime, Utc};

use crate::config::{IntegrationConfig, SignatureEncoding, SignedPayload};
use crate::providers::hmac_sig;
use crate::providers::{SignatureError, WebhookRequest};

/// Longest timestamp header accepted; unix seconds need 10 digits until 2286.
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// Checks the configured signature over the raw body.
pub fn verify(
    integration: &IntegrationConfig,
    request: &WebhookRequest<'_>,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    // Config validation requires the header name; without one nothing can be
    // accepted, which reads to the sender as a missing signature.
    let header_name = integration
        .signature_header
        .as_deref()
        .ok_or(SignatureError::Missing)?;
    let value = request.required_header(header_name)?;
    let expected = decode_signature(value, encoding(integration))?;

    let timestamp = match payload_kind(integration) {
        SignedPayload::Body => None,
        SignedPayload::TimestampDotBody => Some(signed_timestamp(integration, request)?),
    };

    let parts = signed_parts(timestamp.map(|(text, _)| text), request.body);
    hmac_sig::verify_any_secret(&integration.signing_secrets, &parts, &expected)?;

    // Checked after the MAC so an unsigned guess learns nothing about the
    // clock; the tolerance applies both ways so a leaked future-dated
    // delivery cannot be replayed for longer than the window.
    if let Some((_, seconds)) = timestamp {
        let skew = now.timestamp().abs_diff(seconds);
        if skew > integration.timestamp_tolerance_secs.unsigned_abs() {
            return Err(SignatureError::StaleTimestamp);
        }
    }
    Ok(())
}

/// The signature header value the integration's first secret gives `body`
/// signed at `timestamp` (unix seconds; ignored unless the integration signs
/// `timestamp-dot-body`). Used by `kvitto sign` and the sandbox.
pub fn sign(integration: &IntegrationConfig, timestamp: i64, body: &[u8]) -> String {
    let secret = integration
        .signing_secrets
        .iter()
        .find(|s| !s.is_empty())
        .map(String::as_str)
        .unwrap_or_default();
    let timestamp_text = timestamp.to_string();
    let signed_timestamp = match payload_kind(integration) {
        SignedPayload::Body => None,
        SignedPayload::TimestampDotBody => Some(timestamp_text.as_str()),
    };
    let parts = signed_parts(signed_timestamp, body);
    match encoding(integration) {
        SignatureEncoding::Hex => hmac_sig::sign_hex(secret, &parts),
        SignatureEncoding::Base64 => hmac_sig::sign_base64(secret, &parts),
    }
}

pub(crate) fn encoding(integration: &IntegrationConfig) -> SignatureEncoding {
    integration
        .signature_encoding
        .unwrap_or(SignatureEncoding::Hex)
}

pub(crate) fn payload_kind(integration: &IntegrationConfig) -> SignedPayload {
    integration.signed_payload.unwrap_or(SignedPayload::Body)
}

/// What the integration signs: the raw body, preceded by the timestamp
/// header's text and a `.` when it signs `timestamp-dot-body`.
fn signed_parts<'a>(timestamp: Option<&'a str>, body: &'a [u8]) -> Vec<&'a [u8]> {
    match timestamp {
        Some(timestamp) => vec![timestamp.as_bytes(), b".", body],
        None => vec![body],
    }
}

fn decode_signature(value: &str, encoding: SignatureEncoding) -> Result<Vec<u8>, SignatureError> {
    let value = value.trim();
    match encoding {
        SignatureEncoding::Hex => hmac_sig::decode_hex_signature(value),
        SignatureEncoding::Base64 => hmac_sig::decode_base64_signature(value),
    }
}

/// The timestamp header's exact text (which is what was signed) and its value.
fn signed_timestamp<'a>(
    integration: &IntegrationConfig,
    request: &WebhookRequest<'a>,
) -> Result<(&'a str, i64), SignatureError> {
    let name = integration
        .timestamp_header
        .as_deref()
        .ok_or(SignatureError::Missing)?;
    let text = request.required_header(name)?;
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || text.len() > MAX_TIMESTAMP_DIGITS {
        return Err(SignatureError::MalformedHeader(
            "timestamp is not unix seconds",
        ));
    }
    let seconds = text
        .parse()
        .map_err(|_| SignatureError::MalformedHeader("timestamp is not unix seconds"))?;
    Ok((text, seconds))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use chrono::TimeZone;

    use super::*;
    use crate::providers::generic::fixtures;

    const BODY: &[u8] = br#"{"event_id":"evt_1","type":"transaction.created"}"#;
    const SIGNED_AT: i64 = 1_767_225_600;

    // python3 -c 'import hmac,hashlib; print(hmac.new(b"demo-generic-secret",
    //   b"1767225600." + BODY, hashlib.sha256).hexdigest())'
    const TIMESTAMPED_HEX: &str =
        "c2b764a6ddbf8f6109ad8669cbd0cfd671382186ebda2bde08b9ea7765bd7544";
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(
    //   hmac.new(b"demo-generic-secret", BODY, hashlib.sha256).digest()).decode())'
    const BODY_BASE64: &str = "IjImCDTb/IsGvI9UPaZNFb9QDW9+EkBBwyVJInmNZIk=";

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    fn check(
        integration: &IntegrationConfig,
        pairs: &[(&str, &str)],
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let headers = headers(pairs);
        verify(
            integration,
            &WebhookRequest {
                headers: &headers,
                body,
                query: "",
            },
            at(now),
        )
    }

    fn timestamped_pairs(signature: &str) -> Vec<(&str, &str)> {
        vec![
            ("x-pos-timestamp", "1767225600"),
            ("x-pos-signature", signature),
        ]
    }

    #[test]
    fn generic_accepts_independently_computed_timestamped_hex_signature() {
        let integration = fixtures::timestamped("http://unused");
        assert_eq!(
            check(
                &integration,
                &timestamped_pairs(TIMESTAMPED_HEX),
                BODY,
                SIGNED_AT
            ),
            Ok(())
        );
        assert_eq!(sign(&integration, SIGNED_AT, BODY), TIMESTAMPED_HEX);
    }

    #[test]
    fn generic_accepts_independently_computed_base64_body_signature_with_rotated_secret() {
        // The fixture lists "new-secret" first; the vector uses the older one.
        let integration = fixtures::body_signed("http://unused");
        assert_eq!(
            check(&integration, &[("x-pos-signature", BODY_BASE64)], BODY, 0),
            Ok(())
        );
    }

    #[test]
    fn generic_rejects_wrong_key_and_changed_body() {
        let mut integration = fixtures::timestamped("http://unused");
        let pairs = timestamped_pairs(TIMESTAMPED_HEX);
        let mut changed = BODY.to_vec();
        changed[2] ^= 1;
        assert_eq!(
            check(&integration, &pairs, &changed, SIGNED_AT),
            Err(SignatureError::Mismatch)
        );

        integration.signing_secrets = vec!["another-secret".into()];
        assert_eq!(
            check(&integration, &pairs, BODY, SIGNED_AT),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn generic_signature_covers_the_timestamp() {
        let integration = fixtures::timestamped("http://unused");
        let pairs = [
            ("x-pos-timestamp", "1767225601"),
            ("x-pos-signature", TIMESTAMPED_HEX),
        ];
        assert_eq!(
            check(&integration, &pairs, BODY, SIGNED_AT),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn generic_rejects_pretty_printed_body_under_compact_signature() {
        let integration = fixtures::timestamped("http://unused");
        let pretty = b"{\n  \"event_id\": \"evt_1\",\n  \"type\": \"transaction.created\"\n}";
        let pairs = timestamped_pairs(TIMESTAMPED_HEX);
        assert_eq!(
            check(&integration, &pairs, pretty, SIGNED_AT),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn generic_verifies_unicode_bodies_on_raw_bytes() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"demo-generic-secret",
        //   "{\"name\":\"Kanelbulle med grädde å ä ö 🍩\",\"note\":\"\\u00e5\"}"
        //   .encode(), hashlib.sha256).hexdigest())'
        let body = "{\"name\":\"Kanelbulle med grädde å ä ö 🍩\",\"note\":\"\\u00e5\"}";
        let expected = "81b67b109b4240a27b61eb60c5d634bc974b1656dc93034a189f5defb64476a3";
        let mut integration = fixtures::timestamped("http://unused");
        integration.signed_payload = Some(SignedPayload::Body);
        assert_eq!(
            check(
                &integration,
                &[("x-pos-signature", expected)],
                body.as_bytes(),
                0
            ),
            Ok(())
        );
        // The same text with the escape resolved is different bytes.
        let resolved = body.replace("\\u00e5", "å");
        let outcome = check(
            &integration,
            &[("x-pos-signature", expected)],
            resolved.as_bytes(),
            0,
        );
        assert_eq!(outcome, Err(SignatureError::Mismatch));
    }

    #[test]
    fn generic_rejects_timestamp_outside_tolerance_both_ways() {
        let integration = fixtures::timestamped("http://unused");
        let pairs = timestamped_pairs(TIMESTAMPED_HEX);
        let tolerance = integration.timestamp_tolerance_secs;
        assert_eq!(
            check(&integration, &pairs, BODY, SIGNED_AT + tolerance),
            Ok(())
        );
        assert_eq!(
            check(&integration, &pairs, BODY, SIGNED_AT - tolerance),
            Ok(())
        );
        let late = check(&integration, &pairs, BODY, SIGNED_AT + tolerance + 1);
        assert_eq!(late, Err(SignatureError::StaleTimestamp));
        let early = check(&integration, &pairs, BODY, SIGNED_AT - tolerance - 1);
        assert_eq!(early, Err(SignatureError::StaleTimestamp));
    }

    #[test]
    fn generic_reports_missing_headers() {
        let integration = fixtures::timestamped("http://unused");
        let no_signature = [("x-pos-timestamp", "1767225600")];
        assert_eq!(
            check(&integration, &no_signature, BODY, SIGNED_AT),
            Err(SignatureError::Missing)
        );
        let no_timestamp = [("x-pos-signature", TIMESTAMPED_HEX)];
        assert_eq!(
            check(&integration, &no_timestamp, BODY, SIGNED_AT),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn generic_reports_every_malformed_header_without_panicking() {
        let hex = fixtures::timestamped("http://unused");
        let short_hex = &TIMESTAMPED_HEX[..62];
        for signature in ["", "   ", "zz", short_hex, "c2b7 64a6", BODY_BASE64, "é"] {
            let outcome = check(&hex, &timestamped_pairs(signature), BODY, SIGNED_AT);
            assert!(
                matches!(outcome, Err(SignatureError::MalformedHeader(_))),
                "{signature:?}"
            );
        }
        for timestamp in ["", "-5", "1.5", "t=1", "99999999999999999999", "١٢٣"] {
            let pairs = [
                ("x-pos-timestamp", timestamp),
                ("x-pos-signature", TIMESTAMPED_HEX),
            ];
            let outcome = check(&hex, &pairs, BODY, SIGNED_AT);
            assert!(
                matches!(outcome, Err(SignatureError::MalformedHeader(_))),
                "{timestamp:?}"
            );
        }
        let base64 = fixtures::body_signed("http://unused");
        for signature in [
            "!!!!",
            "AAAA",
            TIMESTAMPED_HEX,
            "IjImCDTb/IsGvI9UPaZNFb9QDW9+EkBBwyVJInmNZIk",
        ] {
            let outcome = check(&base64, &[("x-pos-signature", signature)], BODY, 0);
            assert!(
                matches!(outcome, Err(SignatureError::MalformedHeader(_))),
                "{signature:?}"
            );
        }
    }
}
