//! The Stripe rail against the sandbox's Connect API over real HTTP.

use actix_web::web;
use uuid::Uuid;

use super::*;
use crate::providers::stripe::{decode, sandbox, signature};
use crate::providers::{EventAction, RawDelivery, WebhookRequest};
use crate::sandbox::payouts::{FaultSpan, Notifications, PayoutFault, PayoutOp};
use crate::sandbox::{SandboxState, testing};
use crate::settlement::{Rail, SettlementSignal};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A sandbox serving the Stripe routes, and a rail pointed at it with the
/// demo integration's secret key.
fn serve() -> (web::Data<SandboxState>, StripeRail) {
    let (state, address) = testing::serve(sandbox::routes, |_| testing::demo_config());
    let integration = testing::integration_of(&state.config, ProviderKind::Stripe);
    let config = StripeRailConfig {
        api_base_url: format!("http://{address}/stripe"),
        secret_key: integration.api_token.clone().unwrap(),
        onboarding_refresh_url: "https://kvitto.example.se/onboarding/refresh".into(),
        onboarding_return_url: "https://kvitto.example.se/onboarding/done".into(),
    };
    (state, StripeRail::try_new(&config, TIMEOUT).unwrap())
}

fn order(account: &str) -> PayoutOrder {
    PayoutOrder {
        settlement_id: Uuid::new_v4(),
        amount_minor: 1_250,
        currency: "SEK".into(),
        destination: Destination::Stripe {
            account: account.into(),
        },
        message: "Tack för din feedback!".into(),
        provider_ref: None,
    }
}

fn in_flight_ref(status: PayoutStatus) -> String {
    match status {
        PayoutStatus::InFlight { provider_ref } => provider_ref,
        other => panic!("expected in flight, got {other:?}"),
    }
}

fn made(state: &SandboxState, op: PayoutOp, order: &PayoutOrder) -> u32 {
    state.payouts.made(op, &order.settlement_id.to_string())
}

#[actix_rt::test]
async fn stripe_submitting_twice_makes_one_transfer_and_one_payout() {
    let (state, rail) = serve();
    let order = order("acct_1PcustomerA");
    let first = in_flight_ref(rail.submit(&order).await.unwrap());
    let second = in_flight_ref(rail.submit(&order).await.unwrap());
    assert!(first.starts_with("po_"), "{first}");
    assert_eq!(first, second);
    assert_eq!(made(&state, PayoutOp::StripeTransfer, &order), 1);
    assert_eq!(made(&state, PayoutOp::StripePayout, &order), 1);
}

#[actix_rt::test]
async fn stripe_lost_answer_then_retry_makes_exactly_one_payout() {
    let (state, rail) = serve();
    let order = order("acct_1PcustomerB");
    let lost = PayoutFault::LoseAnswer;
    state
        .payouts
        .inject(PayoutOp::StripePayout, lost, FaultSpan::Once);
    let error = rail.submit(&order).await.unwrap_err();
    assert!(matches!(error, RailError::Transient(_)), "{error:?}");
    assert_eq!(made(&state, PayoutOp::StripePayout, &order), 1);

    let retried = in_flight_ref(rail.submit(&order).await.unwrap());
    assert!(state.payouts.object(&retried).is_some());
    assert_eq!(made(&state, PayoutOp::StripeTransfer, &order), 1);
    assert_eq!(made(&state, PayoutOp::StripePayout, &order), 1);
}

#[actix_rt::test]
async fn stripe_server_errors_rate_limits_and_timeouts_are_transient() {
    let (state, rail) = serve();
    let order = order("acct_1PcustomerC");
    let faults = [
        PayoutFault::ServerError,
        PayoutFault::RateLimited {
            retry_after_secs: 30,
        },
        PayoutFault::Hang(TIMEOUT * 2),
    ];
    for fault in faults {
        let op = PayoutOp::StripeTransfer;
        state.payouts.inject(op, fault, FaultSpan::Once);
        let error = rail.submit(&order).await.unwrap_err();
        assert!(
            matches!(error, RailError::Transient(_)),
            "{fault:?}: {error:?}"
        );
    }
    // A hung call still runs to its end, as a real one may; the next
    // submission replays it rather than paying twice.
    in_flight_ref(rail.submit(&order).await.unwrap());
    assert!(made(&state, PayoutOp::StripeTransfer, &order) <= 1);
    assert_eq!(made(&state, PayoutOp::StripePayout, &order), 1);
}

#[actix_rt::test]
async fn stripe_payout_to_a_failing_account_is_failed_on_lookup() {
    let (_state, rail) = serve();
    let mut order = order("acct_1Pfailing");
    order.provider_ref = Some(in_flight_ref(rail.submit(&order).await.unwrap()));
    let status = rail.status(&order).await.unwrap();
    let PayoutStatus::Failed {
        provider_ref,
        reason,
    } = status
    else {
        panic!("expected failed, got {status:?}");
    };
    assert_eq!(provider_ref, order.provider_ref);
    assert!(reason.starts_with("account_closed"), "{reason}");
}

#[actix_rt::test]
async fn stripe_payout_is_paid_on_lookup() {
    let (_state, rail) = serve();
    let mut order = order("acct_1PcustomerD");
    let payout_id = in_flight_ref(rail.submit(&order).await.unwrap());
    order.provider_ref = Some(payout_id.clone());
    assert_eq!(
        rail.status(&order).await.unwrap(),
        PayoutStatus::Paid {
            provider_ref: payout_id
        }
    );
}

#[actix_rt::test]
async fn stripe_status_without_a_reference_replays_the_submission() {
    let (state, rail) = serve();
    let order = order("acct_1PcustomerE");
    let submitted = in_flight_ref(rail.submit(&order).await.unwrap());
    let replayed = in_flight_ref(rail.status(&order).await.unwrap());
    assert_eq!(submitted, replayed);
    assert_eq!(made(&state, PayoutOp::StripePayout, &order), 1);
}

#[actix_rt::test]
async fn stripe_unknown_destination_and_missing_funds_are_refused() {
    let (state, rail) = serve();
    let missing = order("acct_1Pmissing");
    let error = rail.submit(&missing).await.unwrap_err();
    let RailError::Refused(reason) = error else {
        panic!("expected refused, got {error:?}");
    };
    assert!(reason.contains("resource_missing"), "{reason}");
    assert_eq!(made(&state, PayoutOp::StripePayout, &missing), 0);

    let mut rich = order("acct_1PcustomerF");
    rich.amount_minor = crate::providers::stripe::connect_sandbox::PLATFORM_BALANCE_MINOR + 1;
    let error = rail.submit(&rich).await.unwrap_err();
    assert!(
        matches!(&error, RailError::Refused(r) if r.contains("balance_insufficient")),
        "{error:?}"
    );
}

#[actix_rt::test]
async fn stripe_refused_payout_reverses_its_transfer_once() {
    let (state, rail) = serve();
    let order = order("acct_1Pnopayouts");
    let error = rail.submit(&order).await.unwrap_err();
    assert!(
        matches!(&error, RailError::Refused(r) if r.contains("payouts_not_allowed")),
        "{error:?}"
    );
    // Asked again, the rail finds the reversed transfer and makes no other.
    let error = rail.submit(&order).await.unwrap_err();
    assert!(
        matches!(&error, RailError::Refused(r) if r.contains("reversed")),
        "{error:?}"
    );
    assert_eq!(made(&state, PayoutOp::StripeTransfer, &order), 1);
    assert_eq!(made(&state, PayoutOp::StripeTransferReversal, &order), 1);
    assert_eq!(made(&state, PayoutOp::StripePayout, &order), 0);
}

#[actix_rt::test]
async fn stripe_refused_payout_whose_reversal_fails_stays_open() {
    let (state, rail) = serve();
    let order = order("acct_1Pnopayouts");
    let op = PayoutOp::StripeTransferReversal;
    state
        .payouts
        .inject(op, PayoutFault::ServerError, FaultSpan::Once);
    let error = rail.submit(&order).await.unwrap_err();
    assert!(matches!(error, RailError::Transient(_)), "{error:?}");
    assert_eq!(made(&state, op, &order), 0);
    assert!(matches!(
        rail.submit(&order).await,
        Err(RailError::Refused(_))
    ));
    assert_eq!(made(&state, op, &order), 1);
}

#[actix_rt::test]
async fn stripe_wrong_secret_key_is_a_configuration_error_without_the_key() {
    let (_state, rail) = serve();
    let rail = StripeRail {
        secret_key: "sk_test_not_the_platform_key".into(),
        ..rail
    };
    let error = rail.submit(&order("acct_1PcustomerG")).await.unwrap_err();
    assert!(matches!(error, RailError::Config(_)), "{error:?}");
    assert!(!error.to_string().contains("sk_test_not"), "{error}");
}

#[actix_rt::test]
async fn stripe_onboarding_creates_one_account_and_links_to_it() {
    let (state, rail) = serve();
    let request = OnboardingRequest {
        business_id: "cykelverkstan".into(),
        company_name: "Cykelverkstan AB".into(),
        registration_number: "5566778899".into(),
        email: "kassa@cykelverkstan.se".into(),
    };
    let account = rail.create_account(&request).await.unwrap();
    assert!(account.starts_with("acct_"), "{account}");
    assert_eq!(rail.create_account(&request).await.unwrap(), account);
    assert_eq!(
        state.payouts.made(PayoutOp::StripeAccount, "cykelverkstan"),
        1
    );
    let stored = state.payouts.object(&account).unwrap();
    assert_eq!(stored["country"], "SE");
    assert_eq!(stored["business_type"], "company");

    let link = rail.account_link(&account).await.unwrap();
    assert!(link.starts_with("https://connect.stripe.com/"), "{link}");
    assert!(link.contains(&account), "{link}");
}

#[actix_rt::test]
async fn stripe_sandbox_sends_signed_payout_webhooks_that_decode_to_signals() {
    let (state, rail) = serve();
    let order = order("acct_1PcustomerH");
    let payout_id = in_flight_ref(rail.submit(&order).await.unwrap());
    let sent = state.payouts.sent_notifications();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let integration = testing::integration_of(&state.config, ProviderKind::Stripe);
    assert!(
        sent[1].url.ends_with("/webhooks/stripe/demo-stripe"),
        "{}",
        sent[1].url
    );

    let decoded: Vec<_> = sent
        .iter()
        .map(|notification| {
            let headers = actix_web::http::header::HeaderMap::from_iter(
                notification
                    .headers
                    .iter()
                    .map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap())),
            );
            let request = WebhookRequest {
                headers: &headers,
                body: &notification.body,
                query: "",
            };
            signature::verify(&integration, &request, chrono::Utc::now()).unwrap();
            let delivery = RawDelivery {
                body: &notification.body,
                headers: &[],
                query: "",
            };
            decode::decode(&delivery).unwrap().action
        })
        .collect();
    assert!(matches!(
        &decoded[0],
        EventAction::Settlement(SettlementSignal::Transfer { transfer_group, .. })
            if transfer_group.as_deref() == Some(order.settlement_id.to_string().as_str())
    ));
    assert_eq!(
        decoded[1],
        EventAction::Settlement(SettlementSignal::Payout {
            rail: Rail::Stripe,
            account: Some("acct_1PcustomerH".into()),
            status: PayoutStatus::Paid {
                provider_ref: payout_id
            },
        })
    );
}

#[actix_rt::test]
async fn stripe_sandbox_withholds_webhooks_when_told() {
    let (state, rail) = serve();
    state.payouts.set_notifications(Notifications::Withhold);
    rail.submit(&order("acct_1PcustomerI")).await.unwrap();
    assert!(state.payouts.sent_notifications().is_empty());
}

#[test]
fn stripe_payout_statuses_map_to_payout_states() {
    let payout = |status: &str| Payout {
        id: "po_1".into(),
        status: status.into(),
        failure_code: Some("account_closed".into()),
        failure_message: Some("closed".into()),
    };
    let in_flight = PayoutStatus::InFlight {
        provider_ref: "po_1".into(),
    };
    assert_eq!(payout_status(&payout("pending")), Ok(in_flight.clone()));
    assert_eq!(payout_status(&payout("in_transit")), Ok(in_flight));
    assert_eq!(
        payout_status(&payout("paid")),
        Ok(PayoutStatus::Paid {
            provider_ref: "po_1".into()
        })
    );
    for status in ["failed", "canceled"] {
        assert_eq!(
            payout_status(&payout(status)),
            Ok(PayoutStatus::Failed {
                provider_ref: Some("po_1".into()),
                reason: "account_closed: closed".into(),
            })
        );
    }
    assert!(payout_status(&payout("exploded")).is_err());
}

#[test]
fn stripe_statement_descriptor_keeps_what_stripe_accepts() {
    assert_eq!(
        statement_descriptor("Tack för din feedback!").as_deref(),
        Some("Tack fr din feedback")
    );
    assert_eq!(statement_descriptor("<>\"'*").as_deref(), None);
    assert_eq!(
        statement_descriptor(&"a".repeat(40)).map(|d| d.len()),
        Some(MAX_STATEMENT_DESCRIPTOR_CHARS)
    );
}

#[test]
fn stripe_errors_sort_into_transient_configuration_and_refused() {
    let rail = StripeRail::try_new(
        &StripeRailConfig {
            api_base_url: "http://127.0.0.1:1".into(),
            secret_key: "sk_test_secret".into(),
            onboarding_refresh_url: String::new(),
            onboarding_return_url: String::new(),
        },
        TIMEOUT,
    )
    .unwrap();
    let error = |kind: &str, code: &str| StripeError {
        kind: Some(kind.into()),
        code: Some(code.into()),
        message: Some("key sk_test_secret was used".into()),
    };
    let cases = [
        (
            StatusCode::CONFLICT,
            error("invalid_request_error", "lock_timeout"),
            "transient",
        ),
        (
            StatusCode::TOO_MANY_REQUESTS,
            error("invalid_request_error", "rate_limit"),
            "transient",
        ),
        (
            StatusCode::BAD_GATEWAY,
            error("api_error", "x"),
            "transient",
        ),
        (
            StatusCode::UNAUTHORIZED,
            error("invalid_request_error", "api_key_invalid"),
            "config",
        ),
        (
            StatusCode::BAD_REQUEST,
            error("idempotency_error", "idempotency_key_in_use"),
            "config",
        ),
        (
            StatusCode::BAD_REQUEST,
            error("invalid_request_error", "balance_insufficient"),
            "refused",
        ),
        (
            StatusCode::PAYMENT_REQUIRED,
            error("card_error", "card_declined"),
            "refused",
        ),
    ];
    for (status, stripe_error, expected) in cases {
        let classified = rail.classify("payouts.create", status, stripe_error);
        let kind = match &classified {
            RailError::Transient(_) => "transient",
            RailError::Config(_) => "config",
            RailError::Refused(_) => "refused",
        };
        assert_eq!(kind, expected, "{status}: {classified:?}");
        assert!(
            !classified.to_string().contains("sk_test_secret"),
            "{classified}"
        );
    }
    // A payout kvitto was answered with cannot vanish; a missing one is
    // no refusal of anything.
    let missing = error("invalid_request_error", "resource_missing");
    let lookup = rail.classify(PAYOUTS_GET_ENDPOINT, StatusCode::NOT_FOUND, missing);
    assert!(matches!(lookup, RailError::Config(_)), "{lookup:?}");
}
