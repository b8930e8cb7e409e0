//! Stripe's webhook signature: the gate every Stripe delivery passes first.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`.
//! Each `v1` is the lowercase hex HMAC-SHA256, keyed with the whole endpoint
//! secret (`whsec_...` included), of `t`, a `.`, then the raw body (Stripe
//! docs, "Verify webhook signatures manually"). While a secret is being
//! rolled Stripe sends one `v1` per live secret, so any matching `v1` passes.
//! `v0` is a test-mode scheme kvitto never trusts.
//!
//! Guarantee: a delivery is accepted only when one configured secret
//! produces one of its `v1` signatures over the exact bytes received
//! (compared in constant time) and its signed timestamp lies within
//! `timestamp_tolerance_secs` of now, in either direction. The timestamp is
//! judged only once the signature matched, so an unsigned claim about time
//! earns no more than a mismatch.

use chrono::{DateTime, Utc};

use crate::config::IntegrationConfig;
use crate::providers::hmac_sig;
use crate::providers::{SignatureError, WebhookRequest};

/// The header carrying the timestamp and signatures.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// The parts of a `Stripe-Signature` header kvitto uses.
#[derive(Debug, PartialEq, Eq)]
struct ParsedHeader<'a> {
    /// The `t` value exactly as sent: it is signed as text.
    timestamp_text: &'a str,
    timestamp: i64,
    v1_signatures: Vec<Vec<u8>>,
}

/// Checks the Stripe signature of one request with every configured secret.
pub fn verify(
    integration: &IntegrationConfig,
    request: &WebhookRequest<'_>,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let header = request.required_header(SIGNATURE_HEADER)?;
    let parsed = parse_header(header)?;

    // A header with only `v0` (or another scheme) is well-formed but carries
    // nothing kvitto trusts: reported as a mismatch (401), like a wrong key.
    let parts = signed_parts(parsed.timestamp_text, request.body);
    let matches = parsed.v1_signatures.iter().any(|signature| {
        hmac_sig::matches_any_secret(&integration.signing_secrets, &parts, signature)
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }

    let tolerance_secs = integration.timestamp_tolerance_secs.unsigned_abs();
    if now.timestamp().abs_diff(parsed.timestamp) > tolerance_secs {
        return Err(SignatureError::StaleTimestamp);
    }
    Ok(())
}

/// The `Stripe-Signature` value Stripe would send for `body` signed at
/// `timestamp` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp_text = timestamp.to_string();
    let v1 = hmac_sig::sign_hex(secret, &signed_parts(&timestamp_text, body));
    format!("t={timestamp},v1={v1}")
}

/// What Stripe signs: `t` as sent, a `.`, then the raw body.
fn signed_parts<'a>(timestamp_text: &'a str, body: &'a [u8]) -> [&'a [u8]; 3] {
    [timestamp_text.as_bytes(), b".", body]
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, SignatureError> {
    let malformed = SignatureError::MalformedHeader;
    let mut timestamp_text = None;
    let mut v1_signatures = Vec::new();
    let mut other_schemes = 0_usize;

    for item in header.split(',').map(str::trim) {
        let (key, value) = item.split_once('=').ok_or(malformed("item without '='"))?;
        match key {
            "t" if timestamp_text.is_some() => return Err(malformed("more than one t")),
            "t" => timestamp_text = Some(value),
            "v1" => v1_signatures.push(hmac_sig::decode_hex_signature(value)?),
            _ if key.is_empty() => return Err(malformed("item without a key")),
            // `v0` and schemes Stripe may add later are not trusted.
            _ => other_schemes += 1,
        }
    }

    let timestamp_text = timestamp_text.ok_or(malformed("no t"))?;
    if timestamp_text.is_empty() || !timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("t is not unix seconds"));
    }
    let timestamp = timestamp_text
        .parse()
        .map_err(|_| malformed("t is out of range"))?;
    if v1_signatures.is_empty() && other_schemes == 0 {
        return Err(malformed("no signature"));
    }
    Ok(ParsedHeader {
        timestamp_text,
        timestamp,
        v1_signatures,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::providers::ProviderKind;
    use crate::sandbox::testing;

    const SECRET: &str = "whsec_demo_stripe_endpoint_secret";
    const TIMESTAMP: i64 = 1_700_000_000;

    /// A body with å, ä, ö, an emoji and a `\u` escape, as raw UTF-8.
    const BODY: &str = "{\"id\":\"evt_1NG8Du2eZvKYlo2CUI79vXWy\",\"object\":\"event\",\
        \"type\":\"charge.succeeded\",\"note\":\"kanelbulle åäö 🥐 \\u00f6\"}";

    /// Derived with python3:
    /// `hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()`
    /// over the same bytes (the body's `\u00f6` is the six literal characters).
    const BODY_V1: &str = "748016b077d6b2dae2daa4c1df7fb5c971e69f7c0d9354601c40501b246bf023";

    fn integration(secrets: &[&str]) -> IntegrationConfig {
        let mut integration = testing::integration_with_secrets(ProviderKind::Stripe, secrets);
        integration.timestamp_tolerance_secs = 300;
        integration
    }

    fn at(unix_secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(unix_secs, 0).unwrap()
    }

    fn check_at(
        integration: &IntegrationConfig,
        header: Option<&[u8]>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), SignatureError> {
        let headers = testing::headers_with(SIGNATURE_HEADER, header);
        verify(
            integration,
            &WebhookRequest {
                headers: &headers,
                body,
                query: "",
            },
            now,
        )
    }

    fn check(
        integration: &IntegrationConfig,
        header: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        check_at(integration, Some(header.as_bytes()), body, at(TIMESTAMP))
    }

    fn good_header() -> String {
        format!("t={TIMESTAMP},v1={BODY_V1}")
    }

    #[test]
    fn stripe_accepts_independently_derived_signature() {
        let integration = integration(&[SECRET]);
        assert_eq!(check(&integration, &good_header(), BODY.as_bytes()), Ok(()));
        assert_eq!(sign(SECRET, TIMESTAMP, BODY.as_bytes()), good_header());
    }

    #[test]
    fn stripe_accepts_any_matching_v1_in_either_order() {
        let integration = integration(&[SECRET]);
        let other = "0".repeat(64);
        let first = format!("t={TIMESTAMP},v1={BODY_V1},v1={other},v0={other}");
        let second = format!("t={TIMESTAMP},v0={other},v1={other},v1={BODY_V1}");
        assert_eq!(check(&integration, &first, BODY.as_bytes()), Ok(()));
        assert_eq!(check(&integration, &second, BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn stripe_accepts_any_configured_secret_during_rotation() {
        let integration = integration(&["whsec_old", "", SECRET]);
        assert_eq!(check(&integration, &good_header(), BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn stripe_rejects_wrong_key_and_secret_without_prefix() {
        for secret in ["whsec_other", "demo_stripe_endpoint_secret"] {
            let integration = integration(&[secret]);
            let result = check(&integration, &good_header(), BODY.as_bytes());
            assert_eq!(result, Err(SignatureError::Mismatch), "{secret}");
        }
    }

    #[test]
    fn stripe_rejects_one_changed_body_byte_and_pretty_printed_body() {
        let integration = integration(&[SECRET]);
        let mut changed = BODY.as_bytes().to_vec();
        changed[5] ^= 0x01;
        assert_eq!(
            check(&integration, &good_header(), &changed),
            Err(SignatureError::Mismatch)
        );
        let value: serde_json::Value = serde_json::from_str(BODY).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(
            check(&integration, &good_header(), &pretty),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stripe_rejects_signature_moved_to_another_timestamp() {
        let integration = integration(&[SECRET]);
        let header = format!("t={},v1={BODY_V1}", TIMESTAMP + 1);
        assert_eq!(
            check(&integration, &header, BODY.as_bytes()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stripe_v0_only_is_a_mismatch() {
        let integration = integration(&[SECRET]);
        let header = format!("t={TIMESTAMP},v0={BODY_V1}");
        assert_eq!(
            check(&integration, &header, BODY.as_bytes()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stripe_accepts_timestamp_just_inside_tolerance_both_directions() {
        let integration = integration(&[SECRET]);
        let header = good_header();
        for now in [TIMESTAMP + 300, TIMESTAMP - 300] {
            let result = check_at(
                &integration,
                Some(header.as_bytes()),
                BODY.as_bytes(),
                at(now),
            );
            assert_eq!(result, Ok(()), "now = {now}");
        }
    }

    #[test]
    fn stripe_rejects_timestamp_outside_tolerance_both_directions() {
        let integration = integration(&[SECRET]);
        let header = good_header();
        for now in [TIMESTAMP + 301, TIMESTAMP - 301] {
            let result = check_at(
                &integration,
                Some(header.as_bytes()),
                BODY.as_bytes(),
                at(now),
            );
            assert_eq!(result, Err(SignatureError::StaleTimestamp), "now = {now}");
        }
    }

    #[test]
    fn stripe_stale_timestamp_with_wrong_signature_is_a_mismatch() {
        let integration = integration(&["whsec_other"]);
        let header = good_header();
        let now = at(TIMESTAMP + 10_000);
        let result = check_at(&integration, Some(header.as_bytes()), BODY.as_bytes(), now);
        assert_eq!(result, Err(SignatureError::Mismatch));
    }

    #[test]
    fn stripe_missing_header_is_missing() {
        let integration = integration(&[SECRET]);
        let result = check_at(&integration, None, BODY.as_bytes(), at(TIMESTAMP));
        assert_eq!(result, Err(SignatureError::Missing));
    }

    #[test]
    fn stripe_malformed_headers_are_malformed_never_a_panic() {
        let integration = integration(&[SECRET]);
        let malformed = [
            String::new(),
            "   ".into(),
            "garbage".into(),
            format!("t=,v1={BODY_V1}"),
            format!("v1={BODY_V1}"),
            format!("t=-5,v1={BODY_V1}"),
            format!("t=+5,v1={BODY_V1}"),
            format!("t=1e9,v1={BODY_V1}"),
            format!("t=99999999999999999999999,v1={BODY_V1}"),
            format!("t={TIMESTAMP},t={TIMESTAMP},v1={BODY_V1}"),
            format!("t={TIMESTAMP}"),
            format!("t={TIMESTAMP},v1="),
            format!("t={TIMESTAMP},v1=zz{}", &BODY_V1[2..]),
            format!("t={TIMESTAMP},v1={}", &BODY_V1[1..]),
            format!("t={TIMESTAMP},v1={}", &BODY_V1[2..]),
            format!("t={TIMESTAMP},v1={BODY_V1}00"),
            format!("t={TIMESTAMP},v1={BODY_V1},"),
            format!("t={TIMESTAMP},=x,v1={BODY_V1}"),
        ];
        for header in &malformed {
            let result = check(&integration, header, BODY.as_bytes());
            assert!(
                matches!(result, Err(SignatureError::MalformedHeader(_))),
                "{header:?} gave {result:?}"
            );
        }
        let non_ascii = format!("t={TIMESTAMP},v1=å{}", &BODY_V1[2..]);
        let result = check_at(
            &integration,
            Some(non_ascii.as_bytes()),
            BODY.as_bytes(),
            at(TIMESTAMP),
        );
        assert!(
            matches!(result, Err(SignatureError::MalformedHeader(_))),
            "{result:?}"
        );
    }

    #[test]
    fn stripe_accepts_uppercase_hex_and_spaces_after_commas() {
        let integration = integration(&[SECRET]);
        let header = format!("t={TIMESTAMP}, v1={}", BODY_V1.to_ascii_uppercase());
        assert_eq!(check(&integration, &header, BODY.as_bytes()), Ok(()));
    }
}
