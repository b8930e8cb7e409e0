//! Shopify's webhook signature: `X-Shopify-Hmac-Sha256` is the base64 of an
//! HMAC-SHA256 over the raw request body, keyed with the app's client
//! secret (Shopify's "Verify a webhook" guide; `shopify-api-js`
//! `validateHmac`).
//!
//! Guarantee: a delivery passes only if one of the integration's configured
//! secrets produces exactly the header's 32 bytes over exactly the bytes that
//! arrived; the comparison is constant-time. Shopify signs no timestamp, so
//! replays are caught by deduplicating on `X-Shopify-Webhook-Id` instead.

use crate::config::IntegrationConfig;
use crate::providers::hmac_sig;
use crate::providers::{SignatureError, WebhookRequest};

/// The header carrying the signature (header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "x-shopify-hmac-sha256";

/// Checks the delivery's signature against every configured secret. The
/// header must be the base64 of the 32 tag bytes; a hex digest is refused as
/// malformed.
pub fn verify(
    integration: &IntegrationConfig,
    request: &WebhookRequest<'_>,
) -> Result<(), SignatureError> {
    let header = request.required_header(SIGNATURE_HEADER)?;
    let claimed = hmac_sig::decode_base64_signature(header)?;

    hmac_sig::verify_any_secret(&integration.signing_secrets, &[request.body], &claimed)
}

/// The `X-Shopify-Hmac-Sha256` value Shopify would send for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    hmac_sig::sign_base64(secret, &[body])
}

#[cfg(test)]
mod tests {

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;

    const SECRET: &str = "demo-shopify-client-secret";
    const BODY: &[u8] = br#"{"id":9007199254740993,"total_price":"149.50","currency":"SEK"}"#;
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
    //   b"demo-shopify-client-secret",
    //   b"{\"id\":9007199254740993,\"total_price\":\"149.50\",\"currency\":\"SEK\"}",
    //   hashlib.sha256).digest()).decode())'
    const BODY_SIGNATURE: &str = "a++fC0Qw8pzWtW/wm2EdC8TYFSSfdz8Ep0n65+LNxcY=";

    fn check(secrets: &[&str], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let headers = testing::headers_with(SIGNATURE_HEADER, header);
        let request = WebhookRequest {
            headers: &headers,
            body,
            query: "",
        };
        let integration = testing::integration_with_secrets(ProviderKind::Shopify, secrets);
        verify(&integration, &request)
    }

    #[test]
    fn shopify_sign_matches_independent_vector() {
        assert_eq!(sign(SECRET, BODY), BODY_SIGNATURE);
    }

    #[test]
    fn shopify_accepts_independent_vector() {
        assert_eq!(
            check(&[SECRET], Some(BODY_SIGNATURE.as_bytes()), BODY),
            Ok(())
        );
    }

    #[test]
    fn shopify_accepts_any_rotated_secret() {
        let header = Some(BODY_SIGNATURE.as_bytes());
        assert_eq!(check(&["old-secret", SECRET], header, BODY), Ok(()));
        assert_eq!(check(&["", SECRET], header, BODY), Ok(()));
    }

    #[test]
    fn shopify_rejects_wrong_key() {
        let header = Some(BODY_SIGNATURE.as_bytes());
        assert_eq!(
            check(&["another-secret"], header, BODY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(check(&[""], header, BODY), Err(SignatureError::Mismatch));
    }

    #[test]
    fn shopify_rejects_one_changed_body_byte() {
        let mut body = BODY.to_vec();
        body[10] ^= 0x01;
        let header = Some(BODY_SIGNATURE.as_bytes());
        assert_eq!(
            check(&[SECRET], header, &body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn shopify_rejects_pretty_printed_body_under_compact_signature() {
        let value: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let header = Some(BODY_SIGNATURE.as_bytes());
        assert_eq!(
            check(&[SECRET], header, &pretty),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn shopify_verifies_non_ascii_and_escaped_bodies_on_raw_bytes() {
        let body = r#"{"title":"Kanelbulle åäö ÅÄÖ 🥐","note":"\u00e5 \ud83e\udd50"}"#.as_bytes();
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        //   b"demo-shopify-client-secret", "{\"title\":\"Kanelbulle åäö ÅÄÖ 🥐\",
        //   \"note\":\"\\u00e5 \\ud83e\\udd50\"}".encode(), hashlib.sha256).digest()).decode())'
        // (the body as one line, the escapes left as the six characters they are)
        let expected = "DyLR+WGCGuo6z3Hn1hVvFxnLEvMVc6eeXw5d17jYpjI=";
        assert_eq!(sign(SECRET, body), expected);
        assert_eq!(check(&[SECRET], Some(expected.as_bytes()), body), Ok(()));

        // The same text with the escapes decoded is a different body.
        let decoded = r#"{"title":"Kanelbulle åäö ÅÄÖ 🥐","note":"å 🥐"}"#.as_bytes();
        assert_eq!(
            check(&[SECRET], Some(expected.as_bytes()), decoded),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn shopify_rejects_hex_encoded_signature_as_malformed() {
        let hex_digest = hex::encode(STANDARD.decode(BODY_SIGNATURE).unwrap());
        assert_eq!(
            check(&[SECRET], Some(hex_digest.as_bytes()), BODY),
            Err(SignatureError::MalformedHeader(
                "signature has the wrong length"
            ))
        );
    }

    #[test]
    fn shopify_reports_missing_header() {
        assert_eq!(check(&[SECRET], None, BODY), Err(SignatureError::Missing));
    }

    #[test]
    fn shopify_reports_every_malformed_header_without_panicking() {
        let short = STANDARD.encode([0u8; 31]);
        let long = STANDARD.encode([0u8; 33]);
        let cases: [&[u8]; 7] = [
            b"",
            b"not base64 at all!",
            b"a++fC0Qw8pzWtW/wm2EdC8TYFSSfdz8Ep0n65+LNxcY",
            short.as_bytes(),
            long.as_bytes(),
            "åäö".as_bytes(),
            b"\x80\xff",
        ];
        for header in cases {
            let result = check(&[SECRET], Some(header), BODY);
            assert!(
                matches!(result, Err(SignatureError::MalformedHeader(_))),
                "{header:?} gave {result:?}"
            );
        }
    }
}
