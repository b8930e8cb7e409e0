//! Processing on both runtimes: deduplication, ordering, verification
//! against the provider APIs, dead letters, panics, and simulator traffic
//! end to end.

use std::collections::{BTreeMap, HashSet};

use kvitto::canonical::{PaymentState, Verdict, VerificationMode};
use kvitto::providers::ProviderKind;
use kvitto::sandbox::send::{self, SendOptions};
use kvitto::sandbox::{Fault, WebhookKind};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Harness, Runtime, eventually, generic_webhook};

/// Waits until a metric line reads exactly `value`.
async fn metric_reaches(h: &Harness, series: &str, value: u64) {
    let line = format!("{series} {value}");
    eventually(&line, || async {
        h.metrics().await.lines().any(|l| l == line).then_some(())
    })
    .await;
}

fn payloads(deliveries: &[kvitto::bus::Delivery]) -> Vec<Value> {
    deliveries
        .iter()
        .map(|d| serde_json::from_slice(&d.message.payload).expect("JSON event"))
        .collect()
}

on_both_runtimes!(same_event_delivered_concurrently_gives_one_transaction);
async fn same_event_delivered_concurrently_gives_one_transaction(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    let purchase = h.purchase(ProviderKind::Square, 11);
    let webhook = h.webhook(&purchase, WebhookKind::Created);
    let answers = futures::future::join_all((0..5).map(|_| h.send(&webhook))).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");

    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="square",outcome="duplicate"}"#,
        4,
    )
    .await;
    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="square",outcome="verified"}"#,
        1,
    )
    .await;
    assert_eq!(h.transaction_count().await, 1);
    assert_eq!(h.processed_count("provider = 'square'").await, 1);
    let events = h.topic(&h.env.config.bus.transactions_topic()).await;
    assert_eq!(events.len(), 1, "one transaction event for one purchase");
    h.shutdown().await;
}

on_both_runtimes!(square_updates_out_of_order_keep_the_newest_state);
async fn square_updates_out_of_order_keep_the_newest_state(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |config| {
        let square = config
            .integrations
            .iter_mut()
            .find(|i| i.provider == ProviderKind::Square)
            .unwrap();
        square.verification = VerificationMode::SignatureOnly;
    })
    .await
    else {
        return;
    };
    let mut purchase = h.purchase(ProviderKind::Square, 12);
    purchase.updated_at = purchase.created_at + chrono::Duration::seconds(30);
    purchase.state = PaymentState::Completed;
    let updated = h.webhook(&purchase, WebhookKind::Updated);
    let mut approved = purchase.clone();
    approved.state = PaymentState::Pending;
    approved.updated_at = approved.created_at;
    let created = h.webhook(&approved, WebhookKind::Created);

    assert_eq!(h.send(&updated).await, StatusCode::OK);
    assert_eq!(h.send(&created).await, StatusCode::OK);
    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="square",outcome="stale"}"#,
        1,
    )
    .await;

    let id = kvitto::canonical::transaction_id(
        ProviderKind::Square,
        &purchase.integration_id,
        &purchase.transaction_ref,
    );
    let stored = h
        .kvitto
        .store
        .transaction(&id.to_string())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        stored.state,
        PaymentState::Completed,
        "the older APPROVED state must not win"
    );
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.verification, VerificationMode::SignatureOnly);
    assert_eq!(
        h.topic(&h.env.config.bus.transactions_topic()).await.len(),
        1
    );
    h.shutdown().await;
}

on_both_runtimes!(provider_amount_disagreement_rejects_the_transaction_with_the_reason);
async fn provider_amount_disagreement_rejects_the_transaction_with_the_reason(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    h.sandbox.set_fault(
        ProviderKind::Stripe,
        Some(Fault::WrongAmount { delta_minor: 500 }),
    );
    let purchase = h.purchase(ProviderKind::Stripe, 13);
    assert_eq!(
        h.send(&h.webhook(&purchase, WebhookKind::Created)).await,
        StatusCode::OK
    );
    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="stripe",outcome="rejected"}"#,
        1,
    )
    .await;

    let id = kvitto::canonical::transaction_id(
        ProviderKind::Stripe,
        &purchase.integration_id,
        &purchase.transaction_ref,
    );
    let stored = h
        .kvitto
        .store
        .transaction(&id.to_string())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.verdict, Verdict::Rejected);
    assert_eq!(
        stored.amount_minor,
        purchase.amount_minor + 500,
        "the provider's amount is stored"
    );
    assert!(
        stored
            .rejection_reason
            .as_deref()
            .unwrap()
            .starts_with("amount_mismatch"),
        "{stored:?}"
    );
    let events = payloads(&h.topic(&h.env.config.bus.transactions_topic()).await);
    assert_eq!(events[0]["data"]["verdict"], "rejected");
    assert!(
        h.metrics().await.contains(
            r#"kvitto_verification_mismatches_total{provider="stripe",reason="amount"} 1"#
        )
    );
    h.shutdown().await;
}

on_both_runtimes!(provider_outage_is_retried_until_it_ends_without_dead_lettering);
async fn provider_outage_is_retried_until_it_ends_without_dead_lettering(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    h.sandbox
        .set_fault(ProviderKind::Zettle, Some(Fault::ServerError));
    let purchase = h.purchase(ProviderKind::Zettle, 14);
    let other = h.purchase(ProviderKind::Shopify, 15);
    assert_eq!(
        h.send(&h.webhook(&purchase, WebhookKind::Created)).await,
        StatusCode::OK
    );
    assert_eq!(
        h.send(&h.webhook(&other, WebhookKind::Created)).await,
        StatusCode::OK
    );

    // Another provider is not held back by Zettle's outage.
    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="shopify",outcome="verified"}"#,
        1,
    )
    .await;
    eventually("several failed lookups", || async {
        (h.sandbox
            .lookups_of(ProviderKind::Zettle, &purchase.transaction_ref)
            >= 6)
            .then_some(())
    })
    .await;
    assert_eq!(
        h.transaction_count().await,
        1,
        "nothing stored for zettle while its API fails"
    );
    metric_reaches(
        &h,
        r#"kvitto_pipeline_event_retrying{provider="zettle"}"#,
        1,
    )
    .await;

    h.sandbox.set_fault(ProviderKind::Zettle, None);
    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="zettle",outcome="verified"}"#,
        1,
    )
    .await;
    metric_reaches(
        &h,
        r#"kvitto_pipeline_event_retrying{provider="zettle"}"#,
        0,
    )
    .await;
    assert!(
        h.topic(&h.env.config.bus.deadletter_topic())
            .await
            .is_empty()
    );
    assert!(
        h.metrics()
            .await
            .contains(r#"kvitto_provider_api_retries_total{provider="zettle""#)
    );
    h.shutdown().await;
}

on_both_runtimes!(undecodable_event_is_dead_lettered_and_the_partition_moves_on);
async fn undecodable_event_is_dead_lettered_and_the_partition_moves_on(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    let integration = h.integration(ProviderKind::Square).clone();
    // The ids ingress needs are there; the payment is not.
    let body = r#"{"merchant_id":"M1","type":"payment.updated","event_id":"6a2f0b4e-0000-4000-8000-00000000bad1","created_at":"2026-03-01T10:00:00Z","data":{"type":"payment","id":"PAYBAD","object":{"payment":{"id":"PAYBAD","amount_money":"lots"}}}}"#;
    let url = integration.notification_url.clone().unwrap();
    let signature = kvitto::providers::square::signature::sign(
        &integration.signing_secrets[0],
        &url,
        body.as_bytes(),
    );
    let response = h
        .http
        .post(h.webhook_url(&format!("/webhooks/square/{}", integration.id)))
        .header("x-square-hmacsha256-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let good = h.purchase(ProviderKind::Square, 16);
    assert_eq!(
        h.send(&h.webhook(&good, WebhookKind::Created)).await,
        StatusCode::OK
    );

    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="square",outcome="verified"}"#,
        1,
    )
    .await;
    let letters = payloads(&h.topic(&h.env.config.bus.deadletter_topic()).await);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["type"], "se.kvitto.deadletter.v1");
    assert_eq!(letters[0]["data"]["reason"], "undecodable");
    assert_eq!(
        letters[0]["data"]["provider_event_id"],
        "6a2f0b4e-0000-4000-8000-00000000bad1"
    );
    assert!(
        h.metrics()
            .await
            .contains(r#"kvitto_deadletter_total{provider="square",reason="undecodable"} 1"#)
    );
    h.shutdown().await;
}

#[cfg(feature = "failpoints")]
on_both_runtimes!(panicking_event_restarts_the_actor_and_only_that_event_is_dead_lettered);
#[cfg(feature = "failpoints")]
async fn panicking_event_restarts_the_actor_and_only_that_event_is_dead_lettered(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |config| config.processing.max_attempts = 2).await else {
        return;
    };
    fail::cfg("process-event", "panic").unwrap();
    let poison = generic_webhook(&h, "poison-1", "txn-poison-1", "10.00", "");
    let good = h.purchase(ProviderKind::Generic, 17);
    assert_eq!(h.send(&poison).await, StatusCode::OK);
    assert_eq!(
        h.send(&h.webhook(&good, WebhookKind::Created)).await,
        StatusCode::OK
    );

    metric_reaches(
        &h,
        r#"kvitto_events_processed_total{provider="generic",outcome="verified"}"#,
        1,
    )
    .await;
    metric_reaches(
        &h,
        r#"kvitto_actor_restarts_total{provider="generic",reason="panic"}"#,
        2,
    )
    .await;
    let letters = payloads(&h.topic(&h.env.config.bus.deadletter_topic()).await);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["data"]["reason"], "attempts_exhausted");
    assert_eq!(letters[0]["data"]["provider_event_id"], "poison-1");
    assert_eq!(h.transaction_count().await, 1);
    fail::remove("process-event");
    h.shutdown().await;
}

on_both_runtimes!(simulated_traffic_from_every_provider_is_stored_and_published_exactly);
async fn simulated_traffic_from_every_provider_is_stored_and_published_exactly(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    let options = SendOptions {
        count: 140,
        rate_per_sec: 0.0,
        duplicate_ratio: 0.15,
        out_of_order_ratio: 0.3,
        bad_signature_ratio: 0.05,
        concurrency: 8,
        seed: 42,
        ..SendOptions::default()
    };
    let target = format!("http://{}", h.kvitto.webhook_addr);
    let report = send::run(&h.sandbox, &target, &options)
        .await
        .expect("send");
    assert_eq!(report.unexpected_total(), 0, "{report}");
    let providers: HashSet<_> = report.purchases.iter().map(|p| p.provider).collect();
    assert_eq!(providers.len(), 7, "every provider took part");
    let expected = report.purchases.len() as i64;

    eventually("every accepted purchase stored", || async {
        (h.transaction_count().await == expected).then_some(())
    })
    .await;
    for purchase in &report.purchases {
        let id = kvitto::canonical::transaction_id(
            purchase.provider,
            &purchase.integration_id,
            &purchase.transaction_ref,
        );
        let stored = h
            .kvitto
            .store
            .transaction(&id.to_string())
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(stored.verdict, Verdict::Verified, "{purchase:?}");
        assert_eq!(stored.amount_minor, purchase.amount_minor, "{purchase:?}");
        assert_eq!(stored.currency, purchase.currency);
    }

    // Exactly one event per stored revision, each id once.
    let revisions: i64 = h
        .kvitto
        .store
        .recent_transactions(10_000)
        .await
        .unwrap()
        .iter()
        .map(|t| t.revision)
        .sum();
    let events = eventually("every revision published", || async {
        let events = payloads(&h.topic(&h.env.config.bus.transactions_topic()).await);
        (events.len() as i64 == revisions).then_some(events)
    })
    .await;
    let ids: HashSet<_> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), events.len(), "no event published twice");
    let mut per_provider: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "se.kvitto.transaction.v1");
        *per_provider
            .entry(event["data"]["provider"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_provider.len(), 7, "{per_provider:?}");
    assert!(
        h.topic(&h.env.config.bus.deadletter_topic())
            .await
            .is_empty()
    );
    h.shutdown().await;
}
