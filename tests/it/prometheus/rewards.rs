//! Settlement traffic for the live monitoring test: purchases stored through
//! webhooks, feedback on them through `POST /v1/feedback`, rewards paid by
//! the sandbox's Swish and Stripe payout APIs, and a spell of Swish payout
//! errors.

use kvitto::sandbox::payouts::{FaultSpan, PayoutFault, PayoutOp};
use kvitto::settlement::SettlementState;
use kvitto::settlement::store::FeedbackState;
use reqwest::StatusCode;

use super::server::Prometheus;
use crate::settlement::support::{Money, SWISH_PAYOUT};
use crate::support::eventually;

const STRIPE_PAYOUT: &str = r#"{"rail":"stripe","account":"acct_1KvittoKund42"}"#;
/// 200 kr: feedback scoring 95 earns a 20 kr reward.
const PURCHASE_MINOR: i64 = 20_000;
const REWARDED_SCORE: u8 = 95;
/// Below the lowest reward tier: matched, but no reward.
const UNREWARDED_SCORE: u8 = 10;
/// Failed Swish calls to see before the outage ends: more than twice the
/// payout-rail alert's minimum, as Prometheus may first scrape the series
/// some way into the outage.
const SWISH_FAILURES: f64 = 12.0;
/// Payouts caught by the outage; three retrying together fail fast enough
/// to keep the spell to a few seconds.
const PAYOUTS_IN_OUTAGE: u64 = 3;

/// One reward paid by each rail (the Swish one posted twice, so intake also
/// sees a duplicate) and one feedback that earns nothing, each for a
/// purchase stored first. Returns how many purchases it stored.
pub async fn reward_wave(h: &Money, wave: u64) -> i64 {
    let seed = 10_000 * wave;
    let swish = post_feedback(h, seed + 1, SWISH_PAYOUT, REWARDED_SCORE, 2).await;
    let stripe = post_feedback(h, seed + 2, STRIPE_PAYOUT, REWARDED_SCORE, 1).await;
    let nothing = post_feedback(h, seed + 3, SWISH_PAYOUT, UNREWARDED_SCORE, 1).await;
    h.wait_settlement_state(&swish, SettlementState::Paid).await;
    h.wait_settlement_state(&stripe, SettlementState::Paid)
        .await;
    assert_eq!(
        h.wait_feedback_decided(&nothing).await,
        FeedbackState::NotRewarded
    );
    // Redeliveries may add duplicates of their own, never fewer.
    eventually("the duplicate read by intake", || async {
        let metrics = h.harness.metrics().await;
        let duplicates = value(
            &metrics,
            r#"kvitto_feedback_received_total{outcome="duplicate"}"#,
        );
        (duplicates >= wave as f64).then_some(())
    })
    .await;
    3
}

/// The Swish payout API answers 500 to every call until Prometheus has
/// watched the failures grow, then recovers; the payouts caught by it are
/// retried and paid. Returns how many purchases it stored.
pub async fn swish_outage(h: &Money, prometheus: &Prometheus) -> i64 {
    let payouts = &h.harness.sandbox.payouts;
    payouts.inject(
        PayoutOp::SwishPayout,
        PayoutFault::ServerError,
        FaultSpan::Always,
    );
    let mut feedback_ids = Vec::new();
    for n in 0..PAYOUTS_IN_OUTAGE {
        let id = post_feedback(h, 9_000 + n, SWISH_PAYOUT, REWARDED_SCORE, 1).await;
        feedback_ids.push(id);
    }
    let failures = r#"kvitto_settlement_rail_calls_total{rail="swish",operation="submit",outcome="transient"}"#;
    eventually("swish payout calls failing", || async {
        (value(&h.harness.metrics().await, failures) >= SWISH_FAILURES).then_some(())
    })
    .await;
    prometheus.wait_for_scrapes(2.0).await;
    payouts.clear_fault(PayoutOp::SwishPayout);
    for id in &feedback_ids {
        h.wait_settlement_state(id, SettlementState::Paid).await;
    }
    i64::try_from(PAYOUTS_IN_OUTAGE).expect("count")
}

/// Stores a purchase, posts feedback on it `copies` times and returns the
/// feedback's id.
async fn post_feedback(h: &Money, seed: u64, payout: &str, score: u8, copies: usize) -> String {
    let purchase = h.stored_purchase_of(seed, PURCHASE_MINOR).await;
    let id = format!("fb-monitoring-{seed}");
    let hint = format!(
        r#"{{"provider_transaction_id":"{}"}}"#,
        purchase.transaction_ref
    );
    let body = h.feedback_with(&id, &format!("cust-{seed}"), score, &hint, payout);
    for _ in 0..copies {
        assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    }
    id
}

/// The value of one series in a `/metrics` text, 0 while it is absent.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
