//! Payouts over real HTTP against the sandbox's Stripe Connect and Swish
//! payout APIs, on both runtimes: paid once whatever goes wrong on the way,
//! failures give the budget back, refunds after payout are clawed back, and
//! the ledger balances to the öre after each.

use kvitto::sandbox::payouts::{FaultSpan, Notifications, PayoutFault, PayoutOp};
use kvitto::settlement::{SettlementState, ledger};
use reqwest::StatusCode;

use crate::settlement::support::{Money, SWISH_PAYOUT};
use crate::support::Runtime;

const STRIPE_PAYOUT: &str = r#"{"rail":"stripe","account":"acct_1KvittoKund42"}"#;

/// Leaves the provider's notification as the only thing that can move a
/// settlement on within a test.
fn no_status_lookups(config: &mut kvitto::config::Config) {
    config.settlement.first_status_check_secs = 3_600;
    config.settlement.reconcile_after_secs = 3_600;
}

fn swish_uuid(settlement_id: uuid::Uuid) -> String {
    settlement_id.simple().to_string().to_uppercase()
}

/// A stored purchase of 200 kr and feedback on it scoring 95 (a 20 kr
/// reward), paid to `payout`.
async fn reward(h: &Money, seed: u64, feedback_id: &str, payout: &str) {
    let purchase = h.stored_purchase_of(seed, 20_000).await;
    let hint = format!(
        r#"{{"provider_transaction_id":"{}"}}"#,
        purchase.transaction_ref
    );
    let body = h.feedback_with(feedback_id, &format!("cust-{seed}"), 95, &hint, payout);
    assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
}

async fn swish_reward_is_paid_once_and_accounted(runtime: Runtime) {
    // Only Swish's callback can move it on within the test.
    let Some(h) = Money::start(runtime, no_status_lookups).await else {
        return;
    };
    reward(&h, 1, "fb-swish", SWISH_PAYOUT).await;
    let paid = h
        .wait_settlement_state("fb-swish", SettlementState::Paid)
        .await;
    assert_eq!(paid.amount_minor, 2_000);
    let uuid = swish_uuid(paid.id);
    assert_eq!(paid.provider_ref.as_deref(), Some(uuid.as_str()));
    let payouts = &h.harness.sandbox.payouts;
    assert_eq!(payouts.made(PayoutOp::SwishPayout, &uuid), 1);
    let payout = payouts.object(&uuid).expect("sandbox payout");
    assert_eq!(payout["amount"], "20.00");
    assert_eq!(payout["payeeAlias"], "46701234567");

    let pool = h.pool();
    assert_eq!(
        ledger::balance(pool, "clearing:swish").await.unwrap(),
        -2_000
    );
    assert_eq!(
        ledger::balance(pool, ledger::CUSTOMERS_PAYABLE)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        ledger::balance(pool, "business:gardsbutiken:budget")
            .await
            .unwrap(),
        2_200
    );
    h.assert_ledger_balanced().await;
    let states: Vec<String> = h
        .settlement_events()
        .await
        .iter()
        .map(|e| e["data"]["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, vec!["pending", "submitted", "paid"]);
    h.shutdown().await;
}
on_both_runtimes!(swish_reward_is_paid_once_and_accounted);

async fn stripe_reward_moves_on_with_the_payout_webhook(runtime: Runtime) {
    // Only the webhook can move it on within the test.
    let Some(h) = Money::start(runtime, no_status_lookups).await else {
        return;
    };
    reward(&h, 2, "fb-stripe", STRIPE_PAYOUT).await;
    let paid = h
        .wait_settlement_state("fb-stripe", SettlementState::Paid)
        .await;
    let id = paid.id.to_string();
    let payouts = &h.harness.sandbox.payouts;
    assert_eq!(payouts.made(PayoutOp::StripeTransfer, &id), 1);
    assert_eq!(payouts.made(PayoutOp::StripePayout, &id), 1);
    assert!(
        paid.provider_ref
            .as_deref()
            .unwrap_or("")
            .starts_with("po_"),
        "{paid:?}"
    );
    let processed = h
        .harness
        .processed_count("provider = 'stripe' AND outcome = 'settlement'")
        .await;
    assert!(
        processed >= 1,
        "the payout.paid webhook went through the pipeline"
    );
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(stripe_reward_moves_on_with_the_payout_webhook);

async fn lost_answers_and_errors_are_retried_into_one_payout(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |_| {}).await else {
        return;
    };
    let payouts = &h.harness.sandbox.payouts;
    payouts.inject(
        PayoutOp::SwishPayout,
        PayoutFault::LoseAnswer,
        FaultSpan::Once,
    );
    reward(&h, 3, "fb-lost-swish", SWISH_PAYOUT).await;
    let swish = h
        .wait_settlement_state("fb-lost-swish", SettlementState::Paid)
        .await;
    assert_eq!(
        payouts.made(PayoutOp::SwishPayout, &swish_uuid(swish.id)),
        1
    );
    assert!(swish.attempts >= 2, "{swish:?}");

    payouts.inject(
        PayoutOp::StripePayout,
        PayoutFault::LoseAnswer,
        FaultSpan::Once,
    );
    payouts.inject(
        PayoutOp::StripeTransfer,
        PayoutFault::ServerError,
        FaultSpan::Once,
    );
    reward(&h, 4, "fb-lost-stripe", STRIPE_PAYOUT).await;
    let stripe = h
        .wait_settlement_state("fb-lost-stripe", SettlementState::Paid)
        .await;
    let id = stripe.id.to_string();
    assert_eq!(payouts.made(PayoutOp::StripeTransfer, &id), 1);
    assert_eq!(payouts.made(PayoutOp::StripePayout, &id), 1);
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(lost_answers_and_errors_are_retried_into_one_payout);

async fn failed_payouts_give_the_budget_back(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |_| {}).await else {
        return;
    };
    // The sandbox fails Swish payouts to numbers with 0000 after accepting
    // them, and refuses Stripe payouts to accounts that cannot take any.
    let failing_swish = r#"{"rail":"swish","number":"46700000123","ssn":"199001011234"}"#;
    reward(&h, 5, "fb-fail-swish", failing_swish).await;
    let refused_stripe = r#"{"rail":"stripe","account":"acct_nopayouts42"}"#;
    reward(&h, 6, "fb-fail-stripe", refused_stripe).await;
    let swish = h
        .wait_settlement_state("fb-fail-swish", SettlementState::Failed)
        .await;
    let stripe = h
        .wait_settlement_state("fb-fail-stripe", SettlementState::Failed)
        .await;
    assert!(swish.failure_reason.is_some() && stripe.failure_reason.is_some());
    let used = h
        .scalar("SELECT CAST(SUM(used_minor) AS BIGINT) AS v FROM spend_counters")
        .await;
    assert_eq!(used, "0");
    assert_eq!(h.count("ledger_journals", "kind = 'release'").await, 2);
    // Stripe's transfer is taken back when its payout is refused.
    let id = stripe.id.to_string();
    assert_eq!(
        h.harness
            .sandbox
            .payouts
            .made(PayoutOp::StripeTransferReversal, &id),
        1
    );
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(failed_payouts_give_the_budget_back);

async fn refund_after_payout_is_clawed_back_from_the_business(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |_| {}).await else {
        return;
    };
    let purchase = h.stored_purchase_of(7, 20_000).await;
    let body = h.feedback_for(&purchase.transaction_ref, "fb-clawback", "cust-7", 95);
    assert_eq!(h.post_feedback(&body).await.0, StatusCode::ACCEPTED);
    h.wait_settlement_state("fb-clawback", SettlementState::Paid)
        .await;
    h.refund(&purchase).await;
    crate::support::eventually("claw-back recorded", || async {
        h.settlement("fb-clawback").await.filter(|s| s.clawed_back)
    })
    .await;
    let pool = h.pool();
    let owed = ledger::balance(pool, "business:gardsbutiken:clawbacks")
        .await
        .unwrap();
    assert_eq!(owed, 2_000);
    assert_eq!(h.count("ledger_journals", "kind = 'clawback'").await, 1);
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(refund_after_payout_is_clawed_back_from_the_business);

async fn payouts_without_callbacks_are_reconciled_by_asking(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |c| {
        c.settlement.first_status_check_secs = 1;
        c.settlement.reconcile_after_secs = 1;
    })
    .await
    else {
        return;
    };
    h.harness
        .sandbox
        .payouts
        .set_notifications(Notifications::Withhold);
    reward(&h, 8, "fb-quiet-swish", SWISH_PAYOUT).await;
    reward(&h, 9, "fb-quiet-stripe", STRIPE_PAYOUT).await;
    h.wait_settlement_state("fb-quiet-swish", SettlementState::Paid)
        .await;
    h.wait_settlement_state("fb-quiet-stripe", SettlementState::Paid)
        .await;
    assert!(h.harness.sandbox.payouts.sent_notifications().is_empty());
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(payouts_without_callbacks_are_reconciled_by_asking);

async fn stripe_onboarding_creates_an_express_account_and_a_link(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |_| {}).await else {
        return;
    };
    let url = h.harness.webhook_url("/v1/onboarding/stripe");
    let key = crate::settlement::support::API_KEY_GENERIC;
    let body = r#"{"company_name":"Gårdsbutiken i Uppsala AB","registration_number":"556677-8899","email":"ekonomi@gardsbutiken.se"}"#;
    let first: serde_json::Value = h
        .harness
        .http
        .post(&url)
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = first["account_id"]
        .as_str()
        .expect("account id")
        .to_string();
    assert!(account.starts_with("acct_"), "{first}");
    assert!(
        first["onboarding_url"]
            .as_str()
            .unwrap_or("")
            .starts_with("http"),
        "{first}"
    );
    // Asking again keeps the account and gives a fresh link.
    let again: serde_json::Value = h
        .harness
        .http
        .post(&url)
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["account_id"], first["account_id"]);
    let account_object = h.harness.sandbox.payouts.object(&account).expect("account");
    assert_eq!(account_object["country"], "SE");
    assert_eq!(account_object["type"], "express");
    let bad = h
        .harness
        .http
        .post(&url)
        .bearer_auth(key)
        .body(r#"{"company_name":"X","registration_number":"12","email":"a@b.se"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    h.shutdown().await;
}
on_both_runtimes!(stripe_onboarding_creates_an_express_account_and_a_link);

/// A Stripe payout webhook, signed with the demo Stripe integration's
/// secret as any holder of it could.
async fn signed_payout_event(h: &Money, event_type: &str, account: &str, payout_id: &str) -> u16 {
    let integration = h
        .harness
        .integration(kvitto::providers::ProviderKind::Stripe);
    let status = event_type.trim_start_matches("payout.");
    let body = format!(
        r#"{{"id":"evt_forged_{}","object":"event","type":"{event_type}","created":{},
           "account":"{account}","livemode":false,"data":{{"object":{{"id":"{payout_id}","object":"payout",
           "amount":2000,"currency":"sek","status":"{status}","failure_code":null,"failure_message":null}}}}}}"#,
        uuid::Uuid::new_v4().simple(),
        chrono::Utc::now().timestamp()
    );
    let signature = kvitto::providers::stripe::signature::sign(
        &integration.signing_secrets[0],
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    h.harness
        .http
        .post(
            h.harness
                .webhook_url(&format!("/webhooks/stripe/{}", integration.id)),
        )
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("kvitto answers")
        .status()
        .as_u16()
}

async fn payout_webhooks_move_only_what_the_provider_confirms(runtime: Runtime) {
    let Some(h) = Money::start(runtime, no_status_lookups).await else {
        return;
    };
    h.harness
        .sandbox
        .payouts
        .set_notifications(Notifications::Withhold);
    reward(&h, 21, "fb-forged-swish", SWISH_PAYOUT).await;
    reward(&h, 22, "fb-forged-stripe", STRIPE_PAYOUT).await;
    let swish = h
        .wait_settlement_state("fb-forged-swish", SettlementState::Submitted)
        .await;
    let stripe = h
        .wait_settlement_state("fb-forged-stripe", SettlementState::Submitted)
        .await;
    let stripe_payout = stripe.provider_ref.clone().expect("payout id");

    // A Stripe event naming the Swish payout, one naming the Stripe payout
    // on another account, and a false "failed" for the Stripe payout on its
    // own account: the first two are ignored, the third makes kvitto ask
    // Stripe, which says the payout was paid.
    let uuid = swish_uuid(swish.id);
    assert_eq!(
        signed_payout_event(&h, "payout.failed", "acct_1Other", &uuid).await,
        200
    );
    assert_eq!(
        signed_payout_event(&h, "payout.failed", "acct_1Other", &stripe_payout).await,
        200
    );
    let processed = |n: i64| {
        let h = &h;
        async move {
            crate::support::eventually("forged events processed", || async {
                let done = h
                    .harness
                    .processed_count("provider = 'stripe' AND outcome = 'settlement'")
                    .await;
                (done >= n).then_some(())
            })
            .await
        }
    };
    processed(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        h.settlement("fb-forged-swish").await.unwrap().state,
        SettlementState::Submitted
    );
    assert_eq!(
        h.settlement("fb-forged-stripe").await.unwrap().state,
        SettlementState::Submitted
    );
    assert_eq!(
        signed_payout_event(&h, "payout.failed", "acct_1KvittoKund42", &stripe_payout).await,
        200
    );
    let paid = h
        .wait_settlement_state("fb-forged-stripe", SettlementState::Paid)
        .await;
    assert_eq!(paid.provider_ref.as_deref(), Some(stripe_payout.as_str()));
    assert_eq!(
        h.settlement("fb-forged-swish").await.unwrap().state,
        SettlementState::Submitted
    );
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(payout_webhooks_move_only_what_the_provider_confirms);

/// Stripe forgets an idempotency key after a day or so; a payout that
/// keeps failing past that is retried without a second transfer, since the
/// first is found by its transfer group.
async fn retries_past_stripes_key_expiry_transfer_once(runtime: Runtime) {
    let Some(h) = Money::start(runtime, |_| {}).await else {
        return;
    };
    let payouts = &h.harness.sandbox.payouts;
    payouts.inject(
        PayoutOp::StripePayout,
        PayoutFault::ServerError,
        FaultSpan::Always,
    );
    reward(&h, 31, "fb-key-expiry", STRIPE_PAYOUT).await;
    let id = kvitto::settlement::settlement_id("fb-key-expiry").to_string();
    crate::support::eventually("the transfer made and the payout failing", || async {
        let tried = h.settlement("fb-key-expiry").await?.attempts;
        (payouts.made(PayoutOp::StripeTransfer, &id) == 1 && tried >= 2).then_some(())
    })
    .await;
    payouts.expire_idempotency_keys();
    let before = h.settlement("fb-key-expiry").await.unwrap().attempts;
    crate::support::eventually("another try after the keys expired", || async {
        let tried = h.settlement("fb-key-expiry").await?.attempts;
        (tried > before).then_some(())
    })
    .await;
    payouts.clear_fault(PayoutOp::StripePayout);
    h.wait_settlement_state("fb-key-expiry", SettlementState::Paid)
        .await;
    assert_eq!(
        payouts.made(PayoutOp::StripeTransfer, &id),
        1,
        "transferred twice"
    );
    h.assert_ledger_balanced().await;
    h.shutdown().await;
}
on_both_runtimes!(retries_past_stripes_key_expiry_transfer_once);
