//! Zettle's webhook signature (Pusher API): `X-iZettle-Signature` is the hex
//! HMAC-SHA256, keyed with the subscription's `signingKey`, of the
//! envelope's `timestamp` field, a `.`, then its `payload` field, both taken
//! as the decoded JSON string values (Zettle's "Pusher API" webhook
//! verification guide).
//!
//! Guarantee: a delivery passes only if one of the integration's configured
//! keys produces the header's 32 bytes over those two fields, compared in
//! constant time. Because the fields are signed rather than the raw bytes,
//! the envelope's formatting and escaping are not covered; everything kvitto
//! reads from the payload is. Zettle's timestamp is signed but kvitto sets no
//! tolerance on it: replays are caught by deduplicating on `messageUuid`.

use serde::Deserialize;

use crate::config::IntegrationConfig;
use crate::providers::hmac_sig;
use crate::providers::{SignatureError, WebhookRequest};

/// The header carrying the signature (header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "x-izettle-signature";

/// The two envelope fields the signature covers.
#[derive(Deserialize)]
struct SignedFields {
    timestamp: String,
    payload: String,
}

impl SignedFields {
    /// What Zettle signs: the timestamp, a `.`, then the payload.
    fn parts(&self) -> [&[u8]; 3] {
        [self.timestamp.as_bytes(), b".", self.payload.as_bytes()]
    }
}

/// Checks the delivery's signature against every configured signing key.
/// The header is hex in either case.
pub fn verify(
    integration: &IntegrationConfig,
    request: &WebhookRequest<'_>,
) -> Result<(), SignatureError> {
    let header = request.required_header(SIGNATURE_HEADER)?;
    let claimed = hmac_sig::decode_hex_signature(header)?;
    let fields = signed_fields(request.body)?;

    hmac_sig::verify_any_secret(&integration.signing_secrets, &fields.parts(), &claimed)
}

/// The `X-iZettle-Signature` value Zettle would send for `envelope` (the
/// whole JSON body).
pub fn sign(secret: &str, envelope: &[u8]) -> Result<String, SignatureError> {
    let fields = signed_fields(envelope)?;
    Ok(hmac_sig::sign_hex(secret, &fields.parts()))
}

fn signed_fields(envelope: &[u8]) -> Result<SignedFields, SignatureError> {
    serde_json::from_slice(envelope)
        .map_err(|_| SignatureError::MalformedBody("envelope lacks string timestamp and payload"))
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;

    const KEY: &str = "demo-zettle-signing-key";
    const ENVELOPE: &str = r#"{"organizationUuid":"ab2c8f4e-1b7a-11ef-9a3b-0242ac120002","messageUuid":"6a4b1a52-2d1c-4a0b-9d89-cc1e0b9b2f10","eventName":"PurchaseCreated","messageId":"3f1d7f1e0c7a4a66","payload":"{\"purchaseUUID1\":\"0d6f1a38-1f3c-11ef-8000-5e5a1c2b3d4e\",\"amount\":14950,\"currency\":\"SEK\"}","timestamp":"2026-03-14T09:15:31.123Z"}"#;
    // python3 -c 'import hmac,hashlib; print(hmac.new(b"demo-zettle-signing-key",
    //   b"2026-03-14T09:15:31.123Z." + b"{\"purchaseUUID1\":\"0d6f1a38-1f3c-11ef-8000-5e5a1c2b3d4e\",
    //   \"amount\":14950,\"currency\":\"SEK\"}", hashlib.sha256).hexdigest())'
    // (the payload on one line, exactly as the decoded string field)
    const ENVELOPE_SIGNATURE: &str =
        "05c5a6bc178cc61bc01a8ceaabb90b47c4f5544005b089417b5cd2be5ee49a6c";

    fn check(secrets: &[&str], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let headers = testing::headers_with(SIGNATURE_HEADER, header);
        let request = WebhookRequest {
            headers: &headers,
            body,
            query: "",
        };
        let integration = testing::integration_with_secrets(ProviderKind::Zettle, secrets);
        verify(&integration, &request)
    }

    fn valid(body: &str) -> Result<(), SignatureError> {
        check(&[KEY], Some(ENVELOPE_SIGNATURE.as_bytes()), body.as_bytes())
    }

    #[test]
    fn zettle_sign_matches_independent_vector() {
        assert_eq!(sign(KEY, ENVELOPE.as_bytes()).unwrap(), ENVELOPE_SIGNATURE);
    }

    #[test]
    fn zettle_accepts_independent_vector_in_either_hex_case() {
        assert_eq!(valid(ENVELOPE), Ok(()));
        let upper = ENVELOPE_SIGNATURE.to_ascii_uppercase();
        assert_eq!(
            check(&[KEY], Some(upper.as_bytes()), ENVELOPE.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn zettle_accepts_any_rotated_key() {
        let header = Some(ENVELOPE_SIGNATURE.as_bytes());
        assert_eq!(
            check(&["old-key", "", KEY], header, ENVELOPE.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn zettle_rejects_wrong_key() {
        let header = Some(ENVELOPE_SIGNATURE.as_bytes());
        assert_eq!(
            check(&["other-key"], header, ENVELOPE.as_bytes()),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&[""], header, ENVELOPE.as_bytes()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn zettle_rejects_one_changed_payload_or_timestamp_byte() {
        assert_eq!(
            valid(&ENVELOPE.replace("14950", "14951")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            valid(&ENVELOPE.replace(".123Z", ".124Z")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn zettle_signs_fields_so_reformatted_envelope_still_verifies() {
        let value: serde_json::Value = serde_json::from_str(ENVELOPE).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert_ne!(pretty, ENVELOPE);
        assert_eq!(valid(&pretty), Ok(()));
    }

    #[test]
    fn zettle_signs_decoded_payload_text_with_non_ascii_and_escapes() {
        // The payload field escapes å as \u00e5 and 🥐 as a surrogate pair;
        // the signature is over the decoded text "Kanelbulle å 🥐 ÄÖ".
        let envelope = r#"{"payload":"{\"name\":\"Kanelbulle \u00e5 \ud83e\udd50 ÄÖ\"}","timestamp":"2026-03-14T09:15:31.123Z"}"#;
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"demo-zettle-signing-key",
        //   "2026-03-14T09:15:31.123Z.{\"name\":\"Kanelbulle å 🥐 ÄÖ\"}".encode(),
        //   hashlib.sha256).hexdigest())'
        let expected = "8b256f3ec362ee11659b8d62d0eed5066780dc131f9819d98c935ebfa4c49af6";
        assert_eq!(sign(KEY, envelope.as_bytes()).unwrap(), expected);
        assert_eq!(
            check(&[KEY], Some(expected.as_bytes()), envelope.as_bytes()),
            Ok(())
        );

        let literal = r#"{"payload":"{\"name\":\"Kanelbulle å 🥐 ÄÖ\"}","timestamp":"2026-03-14T09:15:31.123Z"}"#;
        assert_eq!(
            check(&[KEY], Some(expected.as_bytes()), literal.as_bytes()),
            Ok(())
        );
        let changed = literal.replace("ÄÖ", "AO");
        assert_eq!(
            check(&[KEY], Some(expected.as_bytes()), changed.as_bytes()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn zettle_reports_missing_header() {
        assert_eq!(
            check(&[KEY], None, ENVELOPE.as_bytes()),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn zettle_reports_every_malformed_header_without_panicking() {
        let base64 = "BcNh2G2m0r+vX7c5R4o4o7yEmYdH8rj0GzvYkM0p9OM=";
        let cases: [&[u8]; 7] = [
            b"",
            b"xyz",
            base64.as_bytes(),
            &ENVELOPE_SIGNATURE.as_bytes()[..63],
            &ENVELOPE_SIGNATURE.as_bytes()[..62],
            "åäö".as_bytes(),
            b"\x80\xff",
        ];
        for header in cases {
            let result = check(&[KEY], Some(header), ENVELOPE.as_bytes());
            assert!(
                matches!(result, Err(SignatureError::MalformedHeader(_))),
                "{header:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn zettle_reports_envelopes_without_signed_fields_as_malformed_body() {
        for body in [
            "",
            "not json",
            "[]",
            r#"{"payload":"{}"}"#,
            r#"{"payload":{},"timestamp":"t"}"#,
        ] {
            let result = valid(body);
            assert!(
                matches!(result, Err(SignatureError::MalformedBody(_))),
                "{body:?} gave {result:?}"
            );
        }
        assert!(matches!(
            sign(KEY, b"\xff"),
            Err(SignatureError::MalformedBody(_))
        ));
    }
}
