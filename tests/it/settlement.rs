//! Settlement over real HTTP, on both runtimes: feedback in through the API
//! and the topic, matched to purchases that came in as webhooks, rewards
//! decided within caps and budgets, held feedback reviewed, refunds.
//! Payouts are in `payout`.

mod random;
pub mod support;

use kvitto::canonical::PaymentState;
use kvitto::providers::ProviderKind;
use kvitto::sandbox::WebhookKind;
use kvitto::settlement::SettlementState;
use kvitto::settlement::store::FeedbackState;
use reqwest::StatusCode;

use self::support::*;
use crate::support::{Runtime, eventually};

async fn feedback_three_times_concurrently_is_one_reward(runtime: Runtime) {
    let Some(h) = Money::start(runtime, no_rails).await else {
        return;
    };
    let purchase = h.stored_purchase(1).await;
    let body = h.feedback_for(&purchase.transaction_ref, "fb-concurrent", "cust-1", 95);
    let answers = futures::future::join_all((0..3).map(|_| h.post_feedback(&body))).await;
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == StatusCode::ACCEPTED),
        "{answers:?}"
    );

    let settlement = h.settlement_of("fb-concurrent").await;
    assert_eq!(settlement.state, SettlementState::Pending);
    assert_eq!(h.count("settlements", "1 = 1").await, 1);
    assert_eq!(h.count("feedback", "1 = 1").await, 1);
    // Three deliveries of one feedback on the topic, one feedback stored.
    eventually("all three deliveries read", || async {
        (h.metric_sum("kvitto_feedback_received_total").await >= 3.0).then_some(())
    })
    .await;
    assert_eq!(h.count("ledger_journals", "kind = 'reserve'").await, 1);
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(feedback_three_times_concurrently_is_one_reward);

async fn feedback_before_its_purchase_matches_when_the_webhook_comes(runtime: Runtime) {
    let Some(h) = Money::start(runtime, no_rails).await else {
        return;
    };
    let purchase = h.harness.purchase(ProviderKind::Generic, 2);
    // Described by amount and time only, as a receipt without an id.
    let body = h.feedback_by_hint(&purchase, "fb-late", "cust-2", 80, 0);
    assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    eventually("feedback stored and waiting", || async {
        h.feedback_state("fb-late")
            .await
            .filter(|s| *s == FeedbackState::Waiting)
    })
    .await;
    assert_eq!(h.count("settlements", "1 = 1").await, 0);

    let webhook = h.harness.webhook(&purchase, WebhookKind::Created);
    assert_eq!(h.harness.send(&webhook).await, StatusCode::OK);
    let settlement = h.settlement_of("fb-late").await;
    let transaction = kvitto::canonical::transaction_id(
        ProviderKind::Generic,
        &h.harness.integration(ProviderKind::Generic).id,
        &purchase.transaction_ref,
    );
    assert_eq!(settlement.purchase_ref, transaction.to_string());
    // 5 % tier (score 80), rounded down, within the 50 kr cap.
    let expected = (purchase.amount_minor * 500 / 10_000).min(5_000);
    assert_eq!(settlement.amount_minor, expected);
    h.shutdown().await;
}
on_both_runtimes!(feedback_before_its_purchase_matches_when_the_webhook_comes);

async fn two_candidate_purchases_hold_feedback_for_review(runtime: Runtime) {
    let Some(h) = Money::start(runtime, no_rails).await else {
        return;
    };
    let first = h.stored_purchase(3).await;
    let second = h.stored_twin_of(&first, 4).await;
    let body = h.feedback_by_hint(&first, "fb-ambiguous", "cust-3", 90, 0);
    assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    h.wait_feedback_state("fb-ambiguous", FeedbackState::Ambiguous)
        .await;
    assert_eq!(h.count("settlements", "1 = 1").await, 0);

    let held = h.review_list(STAFF_KEY).await;
    assert!(held.contains("fb-ambiguous"), "{held}");
    assert_eq!(h.review_list(API_KEY_GENERIC).await, "403");

    let chosen = h.transaction_id_of(&second);
    let (status, answer) = h
        .review(
            "fb-ambiguous",
            "approve",
            &format!(r#"{{"transaction_id":"{chosen}","note":"receipt photo shows till 2"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let settlement = h.settlement_of("fb-ambiguous").await;
    assert_eq!(settlement.purchase_ref, chosen);
    let reviewed_by = h
        .scalar("SELECT reviewed_by AS v FROM feedback WHERE id = 'fb-ambiguous'")
        .await;
    assert_eq!(reviewed_by, "Astrid Lind");

    // Decided once: a second approval is refused.
    let (status, _) = h
        .review(
            "fb-ambiguous",
            "approve",
            r#"{"transaction_id":"x","note":"again"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    h.shutdown().await;
}
on_both_runtimes!(two_candidate_purchases_hold_feedback_for_review);

async fn feedback_without_purchase_ends_unmatched_and_review_decides(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |c| {
        no_rails(c);
        c.settlement.match_deadline_secs = 1;
    })
    .await
    else {
        return;
    };
    let unknown = h.harness.purchase(ProviderKind::Generic, 5);
    for id in ["fb-nomatch-1", "fb-nomatch-2", "fb-nomatch-3"] {
        let body = h.feedback_by_hint(&unknown, id, "cust-4", 70, 0);
        assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    }
    h.wait_feedback_state("fb-nomatch-1", FeedbackState::NoMatchingPurchase)
        .await;
    h.wait_feedback_state("fb-nomatch-2", FeedbackState::NoMatchingPurchase)
        .await;

    let (status, _) = h
        .review(
            "fb-nomatch-1",
            "reject",
            r#"{"note":"no such purchase in the till roll"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.feedback_state("fb-nomatch-1").await,
        Some(FeedbackState::Rejected)
    );

    let receipt = r#"{"receipt":{"number":"Z-1042","amount_minor":25000,"currency":"SEK",
        "occurred_at":"2026-12-04T09:00:00Z"},"note":"paper receipt seen in store"}"#;
    let (status, answer) = h.review("fb-nomatch-2", "approve", receipt).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let settlement = h.settlement_of("fb-nomatch-2").await;
    assert_eq!(settlement.purchase_ref, "receipt:gardsbutiken:Z-1042");
    assert_eq!(settlement.amount_minor, 1_250);

    // One receipt backs one reward: approving another feedback against it
    // is refused and leaves that feedback held, to be approved rightly.
    h.wait_feedback_state("fb-nomatch-3", FeedbackState::NoMatchingPurchase)
        .await;
    // Written in lower case, it is still the same paper receipt.
    let same_receipt = receipt.replace("Z-1042", "z-1042");
    let (status, answer) = h.review("fb-nomatch-3", "approve", &same_receipt).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(
        h.feedback_state("fb-nomatch-3").await,
        Some(FeedbackState::NoMatchingPurchase)
    );
    let other_receipt = receipt.replace("Z-1042", "Z-1043");
    let (status, answer) = h.review("fb-nomatch-3", "approve", &other_receipt).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // A note is required, and the fields are named.
    let (status, answer) = h.review("fb-nomatch-1", "approve", r#"{"note":""}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    h.shutdown().await;
}
on_both_runtimes!(feedback_without_purchase_ends_unmatched_and_review_decides);

async fn customer_cap_trims_then_stops_rewards(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |c| {
        no_rails(c);
        c.settlement.defaults.customer_daily_cap_minor = 700;
    })
    .await
    else {
        return;
    };
    let mut amounts = Vec::new();
    for seed in 10..13 {
        let purchase = h.stored_purchase_of(seed, 10_000).await;
        let id = format!("fb-cap-{seed}");
        let body = h.feedback_for(&purchase.transaction_ref, &id, "cust-5", 95);
        assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
        let state = h.wait_feedback_decided(&id).await;
        amounts.push(match state {
            FeedbackState::Matched => h.settlement_of(&id).await.amount_minor,
            other => {
                assert_eq!(other, FeedbackState::NotRewarded);
                let reason = h
                    .scalar(&format!(
                        "SELECT reason AS v FROM feedback WHERE id = '{id}'"
                    ))
                    .await;
                assert_eq!(reason, "customer_cap_reached");
                0
            }
        });
    }
    // 10 % of 100 kr is 10 kr, but the day allows 7 kr in all.
    assert_eq!(amounts, vec![700, 0, 0]);
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(customer_cap_trims_then_stops_rewards);

async fn exhausted_budget_rewards_nothing_more(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |c| {
        no_rails(c);
        // Room for one 10 kr reward and its 1 kr fee.
        c.settlement.defaults.monthly_budget_minor = 1_500;
    })
    .await
    else {
        return;
    };
    let mut states = Vec::new();
    for seed in 20..22 {
        let purchase = h.stored_purchase_of(seed, 10_000).await;
        let id = format!("fb-budget-{seed}");
        let body = h.feedback_for(&purchase.transaction_ref, &id, &format!("cust-b{seed}"), 95);
        assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
        states.push(h.wait_feedback_decided(&id).await);
    }
    assert_eq!(
        states,
        vec![FeedbackState::Matched, FeedbackState::NotRewarded]
    );
    let reason = h
        .scalar("SELECT reason AS v FROM feedback WHERE id = 'fb-budget-21'")
        .await;
    assert_eq!(reason, "budget_exhausted");
    let used = h
        .scalar("SELECT used_minor AS v FROM spend_counters WHERE scope = 'business_month'")
        .await;
    assert_eq!(used, "1100");
    h.shutdown().await;
}
on_both_runtimes!(exhausted_budget_rewards_nothing_more);

async fn refund_before_payout_cancels_the_reward_and_restores_the_budget(runtime: Runtime) {
    let Some(h) = Money::start(runtime, no_rails).await else {
        return;
    };
    let purchase = h.stored_purchase_of(30, 20_000).await;
    let body = h.feedback_for(&purchase.transaction_ref, "fb-refund", "cust-6", 95);
    assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    assert_eq!(
        h.settlement_of("fb-refund").await.state,
        SettlementState::Pending
    );

    h.refund(&purchase).await;
    h.wait_settlement_state("fb-refund", SettlementState::Canceled)
        .await;
    let used = h
        .scalar("SELECT used_minor AS v FROM spend_counters WHERE scope = 'business_month'")
        .await;
    assert_eq!(used, "0");
    assert_eq!(h.count("ledger_journals", "kind = 'release'").await, 1);
    h.assert_ledger_balanced().await;
    let events = h.settlement_events().await;
    let states: Vec<_> = events
        .iter()
        .map(|e| e["data"]["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, vec!["pending", "canceled"], "{events:?}");
    h.shutdown().await;
}
on_both_runtimes!(refund_before_payout_cancels_the_reward_and_restores_the_budget);

const API_KEY_OTHER_BUSINESS: &str = "fb_test_kafe_linnea_0123456789abcdef";

async fn bad_feedback_gets_a_clear_answer_and_harms_nothing(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |c| {
        no_rails(c);
        c.settlement
            .api_keys
            .push(kvitto::settlement::config::ApiKeyConfig {
                key: API_KEY_OTHER_BUSINESS.into(),
                business_id: "kafe-linnea".into(),
            });
    })
    .await
    else {
        return;
    };
    let purchase = h.stored_purchase(40).await;
    let good = h.feedback_for(&purchase.transaction_ref, "fb-bad", "cust-7", 95);

    let (status, answer) = h.post_feedback_with(Some("nope"), &good).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, answer) = h.post_feedback_with(None, &good).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let other_business = good.replace("gardsbutiken", "kafe-linnea");
    let (status, _) = h.post_feedback(&other_business).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = h.post_feedback(&good.replace("95", "250")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.contains(r#""field":"quality_score""#), "{answer}");
    let (status, answer) = h.post_feedback("{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Not valid feedback on the topic itself, and a message far larger
    // than feedback (its dead letter keeps only its first bytes, so it
    // fits on the bus): dead-lettered, and the next message is still
    // processed.
    h.publish_feedback_raw("garbage", b"{\"feedback_id\": 7}")
        .await;
    let huge = format!(r#"{{"feedback_id":"{}"}}"#, "x".repeat(800_000));
    h.publish_feedback_raw("huge", huge.as_bytes()).await;
    assert_eq!(h.post_feedback(&good).await.0, StatusCode::ACCEPTED);
    h.settlement_of("fb-bad").await;

    // Another business cannot take over the id.
    let (status, answer) = h
        .post_feedback_with(Some(API_KEY_OTHER_BUSINESS), &other_business)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let letters = h
        .harness
        .topic(&h.harness.env.config.bus.deadletter_topic())
        .await;
    let reasons: Vec<String> = letters
        .iter()
        .map(|d| serde_json::from_slice::<serde_json::Value>(&d.message.payload).unwrap()["data"]["reason"].to_string())
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("invalid_feedback"))
            .count(),
        2,
        "{reasons:?}"
    );
    assert!(
        letters.iter().all(|d| d.message.payload.len() < 100_000),
        "a dead letter as large as its message"
    );
    assert_eq!(h.count("feedback", "1 = 1").await, 1);
    h.shutdown().await;
}
on_both_runtimes!(bad_feedback_gets_a_clear_answer_and_harms_nothing);

/// A panic in the intake actor: its supervisor restarts it, the metric and
/// the log say so, and the feedback in hand is processed after all.
async fn intake_restarts_after_a_panic(runtime: Runtime) {
    let Some(h) = Money::start(runtime, no_rails).await else {
        return;
    };
    fail::cfg("settlement-intake-step", "1*panic(boom)").unwrap();
    let purchase = h.stored_purchase(41).await;
    let body = h.feedback_for(&purchase.transaction_ref, "fb-restart", "cust-8", 95);
    assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    h.settlement_of("fb-restart").await;
    let restarts = h.metric_sum("kvitto_settlement_actor_restarts_total").await;
    assert!(restarts >= 1.0, "no restart counted");
    fail::remove("settlement-intake-step");
    h.shutdown().await;
}
on_both_runtimes!(intake_restarts_after_a_panic);

/// A purchase that is not completed backs no reward until it is.
async fn pending_purchase_backs_no_reward(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |c| {
        no_rails(c);
        c.settlement.match_deadline_secs = 1;
    })
    .await
    else {
        return;
    };
    let mut purchase = h.harness.purchase(ProviderKind::Generic, 50);
    purchase.state = PaymentState::Pending;
    h.harness.sandbox.insert(purchase.clone());
    let webhook = h.harness.webhook(&purchase, WebhookKind::Created);
    assert_eq!(h.harness.send(&webhook).await, StatusCode::OK);
    h.wait_transaction(&purchase).await;
    let body = h.feedback_for(&purchase.transaction_ref, "fb-pending", "cust-8", 95);
    assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    h.wait_feedback_state("fb-pending", FeedbackState::NoMatchingPurchase)
        .await;
    assert_eq!(h.count("settlements", "1 = 1").await, 0);
    h.shutdown().await;
}
on_both_runtimes!(pending_purchase_backs_no_reward);

/// The API reads a body only from a caller it knows, only so large and
/// only so slowly; the answers say which limit was hit.
async fn settlement_api_bodies_are_bounded(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |c| {
        no_rails(c);
        c.server.request_timeout_ms = 500;
    })
    .await
    else {
        return;
    };
    let megabyte = "x".repeat(1024 * 1024);
    let post = |path: &str, key: Option<&str>, body: String| {
        let mut request = h
            .harness
            .http
            .post(h.harness.webhook_url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.expect("kvitto answers");
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        }
    };
    let (status, _) = post("/v1/feedback", None, megabyte.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        "/callbacks/swish/payouts/wrong-token",
        None,
        megabyte.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = post("/v1/feedback", Some(API_KEY_GENERIC), megabyte).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(answer.contains(r#""error":"too_large""#), "{answer}");

    // A body promised and never sent.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(h.harness.kvitto.webhook_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/feedback HTTP/1.1\r\nhost: kvitto\r\nauthorization: Bearer {API_KEY_GENERIC}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer, not a hang")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    h.shutdown().await;
}
on_both_runtimes!(settlement_api_bodies_are_bounded);
