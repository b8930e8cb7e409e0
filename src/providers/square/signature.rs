//! Square's webhook signature: the gate every Square delivery passes first.
//!
//! Square signs each notification with the subscription's signature key: the
//! `x-square-hmacsha256-signature` header carries the base64 HMAC-SHA256,
//! keyed with the key's text bytes, of the notification URL immediately
//! followed by the raw body (Square developer docs, "Validate notifications",
//! and the `WebhooksHelper` of Square's SDKs). The URL is the one registered
//! with Square, taken from `notification_url` exactly as configured: kvitto
//! usually sits behind a proxy, so the URL it was reached at proves nothing.
//!
//! Guarantee: a delivery is accepted only when one of the integration's
//! signing secrets produces its signature over the exact bytes received,
//! compared in constant time. Square signs no timestamp, so replays are
//! caught by the event-id deduplication downstream, not here. The legacy
//! `x-square-signature` (HMAC-SHA1) header is ignored.

use crate::config::IntegrationConfig;
use crate::providers::hmac_sig;
use crate::providers::{SignatureError, WebhookRequest};

/// The header carrying the base64 HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-square-hmacsha256-signature";

/// Checks the Square signature of one request with every configured secret.
pub fn verify(
    integration: &IntegrationConfig,
    request: &WebhookRequest<'_>,
) -> Result<(), SignatureError> {
    let header = request.required_header(SIGNATURE_HEADER)?;
    let signature = hmac_sig::decode_base64_signature(header.trim())?;
    // Config validation requires the URL for Square; without one nothing can
    // have been signed for this integration.
    let Some(notification_url) = integration.notification_url.as_deref() else {
        return Err(SignatureError::Mismatch);
    };

    let parts = signed_parts(notification_url, request.body);
    hmac_sig::verify_any_secret(&integration.signing_secrets, &parts, &signature)
}

/// The header value Square would send for `body` delivered to
/// `notification_url` under `secret`.
pub fn sign(secret: &str, notification_url: &str, body: &[u8]) -> String {
    hmac_sig::sign_base64(secret, &signed_parts(notification_url, body))
}

/// What Square signs: the notification URL immediately followed by the body.
fn signed_parts<'a>(notification_url: &'a str, body: &'a [u8]) -> [&'a [u8]; 2] {
    [notification_url.as_bytes(), body]
}

#[cfg(test)]
mod tests {

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;

    const URL: &str = "https://kvitto.example.se/webhooks/square/demo-square";
    const KEY: &str = "demo-square-signature-key";

    /// A body with å, ä, ö, an emoji and a `\u` escape, as raw UTF-8.
    const BODY: &str = "{\"merchant_id\":\"ML8M1AQ1GQG2K\",\"type\":\"payment.updated\",\
        \"event_id\":\"6a8f5f28-54a1-4eb0-a98a-3111513fd4fc\",\
        \"data\":{\"id\":\"KkAkhdMsgzn59SM8A89WgKwekxLZY\",\"note\":\"kaffe åäö ☕ \\u00e5\"}}";

    /// Derived with python3:
    /// `base64.b64encode(hmac.new(KEY, URL + BODY, hashlib.sha256).digest())`
    /// over the same bytes (the body's `\u00e5` is the six literal characters).
    const BODY_SIGNATURE: &str = "ICmCkbYuX1L/rZW/N/orD/JwGLjl/TIMFhLhoxmcsKc=";

    fn integration(secrets: &[&str]) -> IntegrationConfig {
        let mut integration = testing::integration_with_secrets(ProviderKind::Square, secrets);
        integration.notification_url = Some(URL.to_string());
        integration
    }

    fn check(
        integration: &IntegrationConfig,
        header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let headers = testing::headers_with(SIGNATURE_HEADER, header);
        verify(
            integration,
            &WebhookRequest {
                headers: &headers,
                body,
                query: "",
            },
        )
    }

    #[test]
    fn square_accepts_independently_derived_signature() {
        let integration = integration(&[KEY]);
        assert_eq!(
            check(
                &integration,
                Some(BODY_SIGNATURE.as_bytes()),
                BODY.as_bytes()
            ),
            Ok(())
        );
        assert_eq!(sign(KEY, URL, BODY.as_bytes()), BODY_SIGNATURE);
    }

    #[test]
    fn square_accepts_any_configured_secret_during_rotation() {
        let integration = integration(&["", "old-key", KEY]);
        assert_eq!(
            check(
                &integration,
                Some(BODY_SIGNATURE.as_bytes()),
                BODY.as_bytes()
            ),
            Ok(())
        );
    }

    #[test]
    fn square_rejects_wrong_key() {
        let integration = integration(&["another-key"]);
        let result = check(
            &integration,
            Some(BODY_SIGNATURE.as_bytes()),
            BODY.as_bytes(),
        );
        assert_eq!(result, Err(SignatureError::Mismatch));
    }

    #[test]
    fn square_rejects_one_changed_body_byte() {
        let integration = integration(&[KEY]);
        let mut body = BODY.as_bytes().to_vec();
        body[10] ^= 0x01;
        let result = check(&integration, Some(BODY_SIGNATURE.as_bytes()), &body);
        assert_eq!(result, Err(SignatureError::Mismatch));
    }

    #[test]
    fn square_rejects_pretty_printed_body_under_compact_signature() {
        let integration = integration(&[KEY]);
        let value: serde_json::Value = serde_json::from_str(BODY).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let result = check(&integration, Some(BODY_SIGNATURE.as_bytes()), &pretty);
        assert_eq!(result, Err(SignatureError::Mismatch));
    }

    #[test]
    fn square_rejects_signature_made_for_a_different_url() {
        let integration = integration(&[KEY]);
        let other_urls = [
            format!("{URL}/"),
            URL.replacen("https://", "http://", 1),
            format!("{URL}?retry=1"),
        ];
        for url in other_urls {
            let signature = sign(KEY, &url, BODY.as_bytes());
            let result = check(&integration, Some(signature.as_bytes()), BODY.as_bytes());
            assert_eq!(result, Err(SignatureError::Mismatch), "{url}");
        }
    }

    #[test]
    fn square_missing_header_is_missing() {
        let integration = integration(&[KEY]);
        assert_eq!(
            check(&integration, None, BODY.as_bytes()),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn square_malformed_headers_are_malformed_never_a_panic() {
        let integration = integration(&[KEY]);
        let short = BASE64.encode([0_u8; 31]);
        let long = BASE64.encode([0_u8; 33]);
        let malformed: [&[u8]; 7] = [
            b"",
            b"   ",
            b"not base64 at all!",
            b"ICmCkbYuX1L/rZW/N/orD/JwGLjl/TIMFhLhoxmcsKc",
            short.as_bytes(),
            long.as_bytes(),
            "ICmCkbYuX1L/rZW/N/orD/JwGLjl/TIMFhLhoxmcsKå=".as_bytes(),
        ];
        for header in malformed {
            let result = check(&integration, Some(header), BODY.as_bytes());
            assert!(
                matches!(result, Err(SignatureError::MalformedHeader(_))),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn square_signature_covers_raw_bytes_not_decoded_text() {
        let integration = integration(&[KEY]);
        // The same JSON text with the escape decoded is a different body.
        let decoded = BODY.replace("\\u00e5", "å");
        let result = check(
            &integration,
            Some(BODY_SIGNATURE.as_bytes()),
            decoded.as_bytes(),
        );
        assert_eq!(result, Err(SignatureError::Mismatch));
        let own = sign(KEY, URL, decoded.as_bytes());
        assert_eq!(
            check(&integration, Some(own.as_bytes()), decoded.as_bytes()),
            Ok(())
        );
    }
}
