//! Every provider's signature check on arbitrary headers and bodies.
//!
//! Beyond not panicking: Swish and Klarna sign nothing, so they accept
//! everything; for the signing providers, the body's own signature (made
//! with the integration's secret, as the provider would) passes, and stops
//! passing once one body byte changes.

#![no_main]

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use kvitto::config::IntegrationConfig;
use kvitto::providers::{
    self, ProviderKind, SignatureError, WebhookRequest, generic, shopify, square, stripe, zettle,
};
use kvitto_fuzz::{Input, NOW_UNIX_SECS, integration, now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let integration = integration(input.provider);
    let verdict = providers::verify_signature(integration, &input.request(), now());
    if matches!(input.provider, ProviderKind::Swish | ProviderKind::Klarna) {
        assert_eq!(verdict, Ok(()));
        return;
    }

    let body = input.body;
    let Some(signed) = signed_headers(integration, body) else {
        // Zettle signs two fields of the JSON envelope: without them a
        // well-formed signature cannot be checked at all.
        let headers = header_map(&[(zettle::signature::SIGNATURE_HEADER, "00".repeat(32))]);
        let verdict = verify(integration, &headers, body);
        assert!(matches!(verdict, Err(SignatureError::MalformedBody(_))));
        return;
    };
    let headers = header_map(&signed);
    assert_eq!(verify(integration, &headers, body), Ok(()));

    // Zettle signs decoded JSON fields, not the raw bytes.
    if input.provider != ProviderKind::Zettle && !body.is_empty() {
        let mut changed = body.to_vec();
        changed[body.len() / 2] ^= 0x01;
        assert_eq!(
            verify(integration, &headers, &changed),
            Err(SignatureError::Mismatch)
        );
    }
});

/// The headers the provider would send with `body`, signed with the
/// integration's first secret at [`NOW_UNIX_SECS`]; `None` when Zettle
/// finds nothing to sign.
fn signed_headers(
    integration: &IntegrationConfig,
    body: &[u8],
) -> Option<Vec<(&'static str, String)>> {
    let secret = integration.signing_secrets[0].as_str();
    let headers = match integration.provider {
        ProviderKind::Square => {
            let url = integration.notification_url.as_deref().unwrap_or_default();
            let signature = square::signature::sign(secret, url, body);
            vec![(square::signature::SIGNATURE_HEADER, signature)]
        }
        ProviderKind::Stripe => {
            let signature = stripe::signature::sign(secret, NOW_UNIX_SECS, body);
            vec![(stripe::signature::SIGNATURE_HEADER, signature)]
        }
        ProviderKind::Shopify => {
            let signature = shopify::signature::sign(secret, body);
            vec![(shopify::signature::SIGNATURE_HEADER, signature)]
        }
        ProviderKind::Zettle => {
            let signature = zettle::signature::sign(secret, body).ok()?;
            vec![(zettle::signature::SIGNATURE_HEADER, signature)]
        }
        ProviderKind::Generic => {
            let signature = generic::signature::sign(integration, NOW_UNIX_SECS, body);
            let signature_header = integration.signature_header.as_deref();
            let timestamp_header = integration.timestamp_header.as_deref();
            vec![
                (leak(signature_header), signature),
                (leak(timestamp_header), NOW_UNIX_SECS.to_string()),
            ]
        }
        ProviderKind::Swish | ProviderKind::Klarna => Vec::new(),
    };
    Some(headers)
}

/// The demo config's generic header names, which live as long as the
/// config (for the whole run).
fn leak(name: Option<&str>) -> &'static str {
    match name {
        Some("x-pos-signature") => "x-pos-signature",
        Some("x-pos-timestamp") => "x-pos-timestamp",
        other => panic!("the demo config names unexpected generic headers: {other:?}"),
    }
}

fn header_map(pairs: &[(&str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_str(value).expect("signatures are visible ASCII");
        map.insert(name, value);
    }
    map
}

fn verify(
    integration: &IntegrationConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    let request = WebhookRequest {
        headers,
        body,
        query: "",
    };
    providers::verify_signature(integration, &request, now())
}
