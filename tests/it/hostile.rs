//! Hostile and broken input: each case must get a clear answer or a dead
//! letter, and must never stall the provider's partition or change what a
//! provider confirmed.

use std::time::Duration;

use kvitto::canonical::Verdict;
use kvitto::providers::ProviderKind;
use kvitto::sandbox::WebhookKind;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Harness, Runtime, eventually, generic_webhook};

async fn dead_letters(h: &Harness) -> Vec<Value> {
    h.topic(&h.env.config.bus.deadletter_topic())
        .await
        .iter()
        .map(|d| serde_json::from_slice(&d.message.payload).unwrap())
        .collect()
}

/// Sends `bad`, then a good generic webhook, and waits for the good one:
/// the bad one must not hold it back. Returns the dead letters.
async fn bad_then_good(h: &Harness, bad: &kvitto::sandbox::SandboxWebhook) -> Vec<Value> {
    assert_eq!(h.send(bad).await, StatusCode::OK);
    let good = h.purchase(ProviderKind::Generic, 99);
    assert_eq!(
        h.send(&h.webhook(&good, WebhookKind::Created)).await,
        StatusCode::OK
    );
    let id = kvitto::canonical::transaction_id(
        good.provider,
        &good.integration_id,
        &good.transaction_ref,
    );
    eventually("the good event after the bad one", || async {
        h.kvitto
            .store
            .transaction(&id.to_string())
            .await
            .unwrap()
            .map(drop)
    })
    .await;
    eventually("the dead letter", || async {
        let letters = dead_letters(h).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await
}

on_both_runtimes!(purchase_time_out_of_range_is_dead_lettered_not_retried_forever);
async fn purchase_time_out_of_range_is_dead_lettered_not_retried_forever(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    let mut bad = generic_webhook(&h, "year-zero", "txn-year-zero", "10.00", "");
    let body = String::from_utf8(bad.body.clone())
        .unwrap()
        .replace("2026-03-01T10:15:30Z", "0000-01-01T00:30:00+01:00");
    bad = crate::support::signed_generic(
        h.integration(ProviderKind::Generic),
        body.into_bytes(),
        "year-zero",
    );
    let letters = bad_then_good(&h, &bad).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["data"]["reason"], "undecodable");
    assert!(
        letters[0]["data"]["detail"]
            .as_str()
            .unwrap()
            .contains("out of range"),
        "{letters:?}"
    );
    h.shutdown().await;
}

on_both_runtimes!(nul_character_in_an_id_is_dead_lettered_not_retried_forever);
async fn nul_character_in_an_id_is_dead_lettered_not_retried_forever(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    let bad = generic_webhook(&h, r"nul\u0000ev", r"txn\u0000nul", "10.00", "");
    let letters = bad_then_good(&h, &bad).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["data"]["reason"], "undecodable");
    h.shutdown().await;
}

#[actix_rt::test]
async fn forged_unsigned_callback_cannot_change_what_the_provider_confirmed() {
    let h = Harness::start(Runtime::Embedded, |_| {}).await.unwrap();
    let truth = h.purchase(ProviderKind::Swish, 21);
    let mut forged = truth.clone();
    forged.amount_minor = 1;
    assert_eq!(
        h.send(&h.webhook(&forged, WebhookKind::Created)).await,
        StatusCode::OK
    );
    let id = kvitto::canonical::transaction_id(
        truth.provider,
        &truth.integration_id,
        &truth.transaction_ref,
    );
    let stored = eventually("the swish transaction", || async {
        h.kvitto.store.transaction(&id.to_string()).await.unwrap()
    })
    .await;
    assert_eq!(stored.verdict, Verdict::Verified, "{stored:?}");
    assert_eq!(
        stored.amount_minor, truth.amount_minor,
        "the provider's amount, not the callback's"
    );
    h.shutdown().await;
}

#[actix_rt::test]
async fn later_disagreeing_webhook_does_not_unverify_a_confirmed_transaction() {
    let h = Harness::start(Runtime::Embedded, |_| {}).await.unwrap();
    let truth = h.purchase(ProviderKind::Square, 22);
    assert_eq!(
        h.send(&h.webhook(&truth, WebhookKind::Created)).await,
        StatusCode::OK
    );
    let id = kvitto::canonical::transaction_id(
        truth.provider,
        &truth.integration_id,
        &truth.transaction_ref,
    );
    eventually("verified", || async {
        h.kvitto
            .store
            .transaction(&id.to_string())
            .await
            .unwrap()
            .map(drop)
    })
    .await;

    let mut disagreeing = truth.clone();
    disagreeing.amount_minor += 10_000;
    assert_eq!(
        h.send(&h.webhook(&disagreeing, WebhookKind::Updated)).await,
        StatusCode::OK
    );
    let line = r#"kvitto_verification_mismatches_total{provider="square",reason="amount"} 1"#;
    eventually("the mismatch counted", || async {
        h.metrics().await.contains(line).then_some(())
    })
    .await;
    let stored = h
        .kvitto
        .store
        .transaction(&id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.verdict, Verdict::Verified);
    assert_eq!(stored.amount_minor, truth.amount_minor);
    h.shutdown().await;
}

#[actix_rt::test]
async fn slow_body_gets_408_and_webhooks_beyond_the_in_flight_cap_get_503() {
    let h = Harness::start(Runtime::Embedded, |config| {
        config.server.request_timeout_ms = 500;
        config.server.max_inflight_webhooks = 1;
    })
    .await
    .unwrap();
    let integration = h.integration(ProviderKind::Generic).id.clone();
    let mut slow = tokio::net::TcpStream::connect(h.kvitto.webhook_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /webhooks/generic/{integration} HTTP/1.1\r\nHost: kvitto\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The slow request holds the only permit.
    let other = generic_webhook(&h, "while-slow", "txn-while-slow", "10.00", "");
    assert_eq!(h.send(&other).await, StatusCode::SERVICE_UNAVAILABLE);

    let mut answer = vec![0_u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    assert_eq!(h.send(&other).await, StatusCode::OK, "the permit is back");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"kvitto_webhooks_received_total{provider="generic",outcome="overloaded"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"kvitto_webhooks_received_total{provider="generic",outcome="timeout"} 1"#),
        "{metrics}"
    );
    h.shutdown().await;
}
