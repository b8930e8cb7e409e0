//! What the webhook listener answers, for good and bad requests, over real
//! HTTP. None of these may ever be a 5xx.

use kvitto::providers::ProviderKind;
use kvitto::sandbox::WebhookKind;
use reqwest::StatusCode;

use crate::support::{Harness, Runtime, generic_webhook, signed_generic};

async fn harness() -> Harness {
    Harness::start(Runtime::Embedded, |config| {
        config.server.max_body_bytes = 4096
    })
    .await
    .expect("embedded runtime")
}

async fn post(
    harness: &Harness,
    path: &str,
    headers: &[(&str, &[u8])],
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut request = harness.http.post(harness.webhook_url(path)).body(body);
    for (name, value) in headers {
        request = request.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).expect("header bytes"),
        );
    }
    let response = request.send().await.expect("kvitto answers");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[actix_rt::test]
async fn unknown_provider_and_integration_get_404() {
    let h = harness().await;
    let (status, body) = post(&h, "/webhooks/paypal/demo", &[], b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("unknown_integration"), "{body}");
    let (status, _) = post(&h, "/webhooks/square/nobody", &[], b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"kvitto_webhooks_received_total{provider="unknown",outcome="unknown_integration"} 1"#
        ),
        "{metrics}"
    );
    h.shutdown().await;
}

#[actix_rt::test]
async fn every_signed_provider_rejects_a_missing_or_wrong_signature_with_401() {
    let h = harness().await;
    for provider in [
        ProviderKind::Square,
        ProviderKind::Stripe,
        ProviderKind::Shopify,
        ProviderKind::Zettle,
        ProviderKind::Generic,
    ] {
        let purchase = h.purchase(provider, 7);
        let good = h.webhook(&purchase, WebhookKind::Created);

        let mut unsigned = good.clone();
        unsigned.headers.retain(|(name, _)| !is_signature(name));
        assert_eq!(
            h.send(&unsigned).await,
            StatusCode::UNAUTHORIZED,
            "{provider} without signature"
        );

        let mut forged = good.clone();
        assert!(kvitto::sandbox::send::corrupt_signature(&mut forged));
        assert_eq!(
            h.send(&forged).await,
            StatusCode::UNAUTHORIZED,
            "{provider} with a forged signature"
        );

        let mut tampered = good.clone();
        let last = tampered.body.len() - 2;
        tampered.body[last] ^= 0x01;
        let status = h.send(&tampered).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST,
            "{provider} one byte changed: {status}"
        );

        assert_eq!(
            h.send(&good).await,
            StatusCode::OK,
            "{provider} correctly signed"
        );
    }
    h.shutdown().await;
}

fn is_signature(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("signature") || name.contains("hmac")
}

#[actix_rt::test]
async fn malformed_signature_headers_get_400_or_401_never_5xx() {
    let h = harness().await;
    let stripe = h.integration(ProviderKind::Stripe).id.clone();
    let square = h.integration(ProviderKind::Square).id.clone();
    let shopify = h.integration(ProviderKind::Shopify).id.clone();
    let body = br#"{"id":"evt_1","object":"event","type":"charge.succeeded","created":1,"data":{"object":{"id":"ch_1"}}}"#.to_vec();
    let cases: Vec<(String, &str, &[u8])> = vec![
        (
            format!("/webhooks/stripe/{stripe}"),
            "stripe-signature",
            b"",
        ),
        (
            format!("/webhooks/stripe/{stripe}"),
            "stripe-signature",
            b"t=",
        ),
        (
            format!("/webhooks/stripe/{stripe}"),
            "stripe-signature",
            b"t=123",
        ),
        (
            format!("/webhooks/stripe/{stripe}"),
            "stripe-signature",
            b"t=abc,v1=zz",
        ),
        (
            format!("/webhooks/stripe/{stripe}"),
            "stripe-signature",
            b"v1=00,t=,,,=",
        ),
        (
            format!("/webhooks/stripe/{stripe}"),
            "stripe-signature",
            "t=1,v1=\u{e5}\u{e4}".as_bytes(),
        ),
        (
            format!("/webhooks/stripe/{stripe}"),
            "stripe-signature",
            b"t=99999999999999999999999,v1=00",
        ),
        (
            format!("/webhooks/square/{square}"),
            "x-square-hmacsha256-signature",
            b"not base64!",
        ),
        (
            format!("/webhooks/square/{square}"),
            "x-square-hmacsha256-signature",
            &[0xff, 0xfe],
        ),
        (
            format!("/webhooks/shopify/{shopify}"),
            "x-shopify-hmac-sha256",
            b"====",
        ),
    ];
    for (path, header, value) in cases {
        let (status, response) = post(&h, &path, &[(header, value)], body.clone()).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED,
            "{header}: {:?} answered {status}: {response}",
            String::from_utf8_lossy(value)
        );
    }
    h.shutdown().await;
}

#[actix_rt::test]
async fn stripe_timestamp_outside_tolerance_is_401_stale_timestamp() {
    let h = harness().await;
    let integration = h.integration(ProviderKind::Stripe).clone();
    let body = br#"{"id":"evt_stale","object":"event","type":"charge.succeeded","created":1,"data":{"object":{"id":"ch_1"}}}"#;
    for offset in [-301_i64, 301] {
        let timestamp = chrono::Utc::now().timestamp() + offset;
        let header = kvitto::providers::stripe::signature::sign(
            &integration.signing_secrets[0],
            timestamp,
            body,
        );
        let path = format!("/webhooks/stripe/{}", integration.id);
        let (status, response) = post(
            &h,
            &path,
            &[("stripe-signature", header.as_bytes())],
            body.to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "offset {offset}");
        assert!(response.contains("stale_timestamp"), "{response}");
    }
    h.shutdown().await;
}

#[actix_rt::test]
async fn body_that_is_not_utf8_gets_a_clear_400() {
    let h = harness().await;
    let integration = h.integration(ProviderKind::Generic).clone();
    let webhook = signed_generic(&integration, vec![b'{', 0xc3, 0x28, b'}'], "bad-utf8");
    let mut request = h
        .http
        .post(h.webhook_url(&webhook.path_and_query))
        .body(webhook.body.clone());
    for (name, value) in &webhook.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("not UTF-8"));
    h.shutdown().await;
}

#[actix_rt::test]
async fn body_just_under_the_limit_is_accepted_and_one_over_gets_413() {
    let h = harness().await;
    let base = generic_webhook(&h, "limit-1", "txn-limit-1", "10.00", r#","note":"""#);
    // Pad the note so the body is exactly the limit, then one byte more.
    let padding = 4096 - base.body.len();
    let fitted = generic_webhook(
        &h,
        "limit-1",
        "txn-limit-1",
        "10.00",
        &format!(r#","note":"{}""#, "x".repeat(padding)),
    );
    assert_eq!(fitted.body.len(), 4096);
    assert_eq!(h.send(&fitted).await, StatusCode::OK);
    let over = generic_webhook(
        &h,
        "limit-2",
        "txn-limit-2",
        "10.00",
        &format!(r#","note":"{}""#, "x".repeat(padding + 1)),
    );
    assert_eq!(over.body.len(), 4097);
    assert_eq!(h.send(&over).await, StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"kvitto_webhooks_received_total{provider="generic",outcome="too_large"} 1"#
        ),
        "{metrics}"
    );
    h.shutdown().await;
}

#[actix_rt::test]
async fn unicode_bodies_verify_on_the_raw_bytes_and_keep_their_text() {
    let h = harness().await;
    let integration = h.integration(ProviderKind::Generic).clone();
    let body = r#"{"event_id":"unicode-1","type":"transaction.created","transaction_id":"txn-unicode-1","amount":"49.00","currency":"SEK","status":"completed","occurred_at":"2026-03-01T10:15:30Z","line_items":[{"name":"Sm\u00f6rg\u00e5s med r\u00e4kor 🦐 åäö","quantity":"1","unit_price":"49.00"}]}"#;
    let webhook = signed_generic(&integration, body.as_bytes().to_vec(), "unicode-1");
    assert_eq!(h.send(&webhook).await, StatusCode::OK);
    h.sandbox.insert(kvitto::sandbox::Purchase {
        provider: ProviderKind::Generic,
        integration_id: integration.id.clone(),
        transaction_ref: "txn-unicode-1".into(),
        amount_minor: 4900,
        currency: "SEK".into(),
        state: kvitto::canonical::PaymentState::Completed,
        created_at: "2026-03-01T10:15:30Z".parse().unwrap(),
        updated_at: "2026-03-01T10:15:30Z".parse().unwrap(),
        location_ref: "till-1".into(),
        line_items: vec![],
    });
    let id =
        kvitto::canonical::transaction_id(ProviderKind::Generic, &integration.id, "txn-unicode-1")
            .to_string();
    let stored = crate::support::eventually("the unicode transaction", || async {
        h.kvitto.store.transaction(&id).await.unwrap()
    })
    .await;
    assert_eq!(stored.line_items[0].name, "Smörgås med räkor 🦐 åäö");
    h.shutdown().await;
}

#[actix_rt::test]
async fn answers_never_echo_secrets() {
    let h = harness().await;
    let integration = h.integration(ProviderKind::Generic).clone();
    let secret = integration.signing_secrets[0].clone();
    let mut webhook = generic_webhook(&h, "echo-1", "txn-echo-1", "10.00", "");
    webhook
        .headers
        .retain(|(name, _)| name != "x-pos-timestamp");
    webhook
        .headers
        .push(("x-pos-timestamp".into(), secret.clone()));
    let mut request = h
        .http
        .post(h.webhook_url(&webhook.path_and_query))
        .body(webhook.body.clone());
    for (name, value) in &webhook.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_client_error());
    let text = response.text().await.unwrap();
    assert!(!text.contains(&secret), "{text}");
    h.shutdown().await;
}
