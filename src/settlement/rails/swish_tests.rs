//! The Swish rail: its signature and amounts, and its calls against the
//! sandbox's payouts API over real HTTP.

use actix_web::web;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;

use super::*;
use crate::providers::swish::sandbox;
use crate::sandbox::payouts::{
    FaultSpan, Notifications, PayoutFault, PayoutOp, SWISH_SIGNING_KEY_FILE,
    SWISH_SIGNING_PUBLIC_KEY_FILE,
};
use crate::sandbox::{SandboxState, testing};

const TIMEOUT: Duration = Duration::from_secs(2);
const CALLBACK_URL: &str =
    "https://kvitto.example.se/callbacks/swish/payouts/3b9f0c2e7d4a4f6b8e1a5c7d9f2b4e6a";

fn config(api_base_url: String) -> SwishRailConfig {
    SwishRailConfig {
        api_base_url,
        payer_alias: "1231181189".into(),
        client_cert_file: None,
        client_key_file: None,
        signing_key_file: SWISH_SIGNING_KEY_FILE.into(),
        signing_certificate_serial: "4512B3EBDA6E3CE6BFB14ABA6274A02C".into(),
        callback_url: CALLBACK_URL.into(),
        callback_token: "3b9f0c2e7d4a4f6b8e1a5c7d9f2b4e6a".into(),
    }
}

/// A sandbox serving the Swish routes, and a rail pointed at it.
fn serve() -> (web::Data<SandboxState>, SwishRail) {
    let (state, address) = testing::serve(sandbox::routes, |_| testing::demo_config());
    let rail = SwishRail::try_new(&config(format!("http://{address}/swish")), TIMEOUT).unwrap();
    (state, rail)
}

fn offline_rail() -> SwishRail {
    SwishRail::try_new(&config("http://127.0.0.1:1/swish".into()), TIMEOUT).unwrap()
}

fn order(number: &str) -> PayoutOrder {
    PayoutOrder {
        settlement_id: Uuid::new_v4(),
        amount_minor: 1_250,
        currency: "SEK".into(),
        destination: Destination::Swish {
            number: number.into(),
            ssn: "199001011234".into(),
        },
        message: "Tack för din feedback på Glassbaren, välkommen tillbaka snart!".into(),
        provider_ref: None,
    }
}

fn provider_ref(status: &PayoutStatus) -> &str {
    match status {
        PayoutStatus::InFlight { provider_ref } | PayoutStatus::Paid { provider_ref } => {
            provider_ref
        }
        PayoutStatus::Failed { provider_ref, .. } => provider_ref.as_deref().unwrap(),
    }
}

fn made(state: &SandboxState, order: &PayoutOrder) -> u32 {
    let uuid = instruction_uuid(order.settlement_id);
    state.payouts.made(PayoutOp::SwishPayout, &uuid)
}

#[test]
fn swish_signature_verifies_with_the_public_key_over_the_payload_hash() {
    let rail = offline_rail();
    let order = order("46701234567");
    let uuid = instruction_uuid(order.settlement_id);
    let body = rail.request_body(&order, &uuid).unwrap();

    #[derive(Deserialize)]
    struct Sent<'a> {
        #[serde(borrow)]
        payload: &'a RawValue,
        signature: String,
        #[serde(rename = "callbackUrl")]
        callback_url: String,
    }
    let sent: Sent<'_> = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent.callback_url, CALLBACK_URL);
    let pem = std::fs::read_to_string(SWISH_SIGNING_PUBLIC_KEY_FILE).unwrap();
    let public_key = RsaPublicKey::from_public_key_pem(&pem).unwrap();
    let signature =
        Signature::try_from(BASE64.decode(&sent.signature).unwrap().as_slice()).unwrap();
    let verifier = VerifyingKey::<Sha512>::new(public_key);
    let digest = Sha512::digest(sent.payload.get().as_bytes());
    assert!(verifier.verify(&digest, &signature).is_ok());
    // Signed once over the hash, not over the payload itself.
    assert!(
        verifier
            .verify(sent.payload.get().as_bytes(), &signature)
            .is_err()
    );

    let payload: serde_json::Value = serde_json::from_str(sent.payload.get()).unwrap();
    assert_eq!(payload["payoutInstructionUUID"], uuid);
    assert_eq!(uuid.len(), 32);
    assert_eq!(uuid, uuid.to_ascii_uppercase());
    assert_eq!(
        payload["payerPaymentReference"],
        order.settlement_id.simple().to_string()
    );
    assert_eq!(payload["amount"], "12.50");
    assert_eq!(payload["currency"], "SEK");
    assert_eq!(payload["payoutType"], "PAYOUT");
    assert_eq!(payload["payeeSSN"], "199001011234");
    assert_eq!(
        payload["message"].as_str().unwrap().chars().count(),
        MAX_MESSAGE_CHARS
    );
}

#[test]
fn swish_amounts_render_with_two_decimals_from_ore() {
    assert_eq!(amount_text(1_250).unwrap(), "12.50");
    assert_eq!(amount_text(5).unwrap(), "0.05");
    assert_eq!(amount_text(100).unwrap(), "1.00");
    assert_eq!(amount_text(i64::MAX).unwrap(), "92233720368547758.07");
    assert!(matches!(amount_text(0), Err(RailError::Refused(_))));
    assert!(matches!(amount_text(-100), Err(RailError::Refused(_))));
}

#[test]
fn swish_refuses_other_currencies_and_malformed_payees_before_calling() {
    let rail = offline_rail();
    let mut euro = order("46701234567");
    euro.currency = "EUR".into();
    let uuid = instruction_uuid(euro.settlement_id);
    assert!(matches!(
        rail.request_body(&euro, &uuid),
        Err(RailError::Refused(_))
    ));
    for (number, ssn) in [("4670-123", "199001011234"), ("46701234567", "9001011234")] {
        let mut bad = order(number);
        bad.destination = Destination::Swish {
            number: number.into(),
            ssn: ssn.into(),
        };
        assert!(
            matches!(rail.request_body(&bad, &uuid), Err(RailError::Refused(_))),
            "{number} {ssn}"
        );
    }
}

#[test]
fn swish_errors_sort_into_duplicate_transient_configuration_and_refused() {
    let errors = |code: &str| {
        vec![SwishError {
            error_code: Some(code.into()),
            error_message: Some("text".into()),
        }]
    };
    assert_eq!(
        classify_refusal(StatusCode::UNPROCESSABLE_ENTITY, &errors("RP09")),
        Ok(Created::Duplicate)
    );
    assert_eq!(
        classify_refusal(StatusCode::CONFLICT, &[]),
        Ok(Created::Duplicate)
    );
    let sorted = |status, code: &str| classify_refusal(status, &errors(code)).unwrap_err();
    assert!(matches!(
        sorted(StatusCode::INTERNAL_SERVER_ERROR, "X"),
        RailError::Transient(_)
    ));
    assert!(matches!(
        sorted(StatusCode::TOO_MANY_REQUESTS, "X"),
        RailError::Transient(_)
    ));
    assert!(matches!(
        sorted(StatusCode::FORBIDDEN, "X"),
        RailError::Config(_)
    ));
    let refused = sorted(StatusCode::UNPROCESSABLE_ENTITY, "AM02");
    assert_eq!(
        refused,
        RailError::Refused("swish answered 422 Unprocessable Entity: AM02: text".into())
    );
}

#[test]
fn swish_statuses_map_to_payout_states() {
    let answer = |status: &str| PayoutAnswer {
        status: status.into(),
        error_code: Some("RF07".into()),
        error_message: Some("Transaction declined".into()),
    };
    let uuid = "AB";
    for status in ["CREATED", "DEBITED"] {
        assert_eq!(
            payout_status(uuid, &answer(status)),
            Ok(PayoutStatus::InFlight {
                provider_ref: uuid.into()
            })
        );
    }
    assert_eq!(
        payout_status(uuid, &answer("PAID")),
        Ok(PayoutStatus::Paid {
            provider_ref: uuid.into()
        })
    );
    for status in ["ERROR", "CANCELLED"] {
        assert_eq!(
            payout_status(uuid, &answer(status)),
            Ok(PayoutStatus::Failed {
                provider_ref: Some(uuid.into()),
                reason: "RF07: Transaction declined".into(),
            })
        );
    }
    assert!(matches!(
        payout_status(uuid, &answer("LOST")),
        Err(RailError::Transient(_))
    ));
}

#[actix_rt::test]
async fn swish_submitting_twice_makes_one_payout_with_one_reference() {
    let (state, rail) = serve();
    let order = order("46701234567");
    let first = rail.submit(&order).await.unwrap();
    assert!(matches!(first, PayoutStatus::InFlight { .. }), "{first:?}");
    let second = rail.submit(&order).await.unwrap();
    assert_eq!(provider_ref(&first), provider_ref(&second));
    assert_eq!(
        second,
        PayoutStatus::Paid {
            provider_ref: provider_ref(&first).into()
        }
    );
    assert_eq!(made(&state, &order), 1);
}

#[actix_rt::test]
async fn swish_lost_answer_then_retry_makes_exactly_one_payout() {
    let (state, rail) = serve();
    let order = order("46701234567");
    state.payouts.inject(
        PayoutOp::SwishPayout,
        PayoutFault::LoseAnswer,
        FaultSpan::Once,
    );
    let error = rail.submit(&order).await.unwrap_err();
    assert!(matches!(error, RailError::Transient(_)), "{error:?}");
    let retried = rail.submit(&order).await.unwrap();
    assert_eq!(
        provider_ref(&retried),
        instruction_uuid(order.settlement_id)
    );
    assert_eq!(made(&state, &order), 1);
}

#[actix_rt::test]
async fn swish_server_errors_rate_limits_and_timeouts_are_transient() {
    let (state, rail) = serve();
    let order = order("46701234567");
    let faults = [
        PayoutFault::ServerError,
        PayoutFault::RateLimited {
            retry_after_secs: 30,
        },
        PayoutFault::Hang(TIMEOUT * 2),
    ];
    for fault in faults {
        state
            .payouts
            .inject(PayoutOp::SwishPayout, fault, FaultSpan::Once);
        let error = rail.submit(&order).await.unwrap_err();
        assert!(
            matches!(error, RailError::Transient(_)),
            "{fault:?}: {error:?}"
        );
    }
    rail.submit(&order).await.unwrap();
    assert_eq!(made(&state, &order), 1);
}

#[actix_rt::test]
async fn swish_payout_to_a_failing_payee_is_failed_on_lookup() {
    let (_state, rail) = serve();
    let order = order("46700000123");
    assert!(matches!(
        rail.submit(&order).await.unwrap(),
        PayoutStatus::InFlight { .. }
    ));
    let status = rail.status(&order).await.unwrap();
    assert_eq!(
        status,
        PayoutStatus::Failed {
            provider_ref: Some(instruction_uuid(order.settlement_id)),
            reason: "RF07: Transaction declined".into(),
        }
    );
}

#[actix_rt::test]
async fn swish_status_of_an_unknown_payout_requests_it() {
    let (state, rail) = serve();
    let order = order("46701234567");
    let status = rail.status(&order).await.unwrap();
    assert!(
        matches!(status, PayoutStatus::InFlight { .. }),
        "{status:?}"
    );
    assert_eq!(made(&state, &order), 1);
}

#[actix_rt::test]
async fn swish_refusal_carries_the_swish_error_code() {
    let (state, rail) = serve();
    let mut order = order("46701234567");
    order.amount_minor = crate::providers::swish::payouts_sandbox::MAX_PAYOUT_MINOR + 1;
    let error = rail.submit(&order).await.unwrap_err();
    assert!(
        matches!(&error, RailError::Refused(r) if r.contains("AM02")),
        "{error:?}"
    );
    assert_eq!(made(&state, &order), 0);
}

#[actix_rt::test]
async fn swish_sandbox_refuses_a_payload_changed_after_signing() {
    let (state, rail) = serve();
    let order = order("46701234567");
    let uuid = instruction_uuid(order.settlement_id);
    let body = String::from_utf8(rail.request_body(&order, &uuid).unwrap()).unwrap();
    let forged = body.replace("\"12.50\"", "\"99.50\"");
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/payouts/", rail.api_base))
        .header("content-type", "application/json")
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(made(&state, &order), 0);
}

#[actix_rt::test]
async fn swish_sandbox_calls_back_unless_withheld() {
    let (state, rail) = serve();
    let order = order("46701234567");
    rail.submit(&order).await.unwrap();
    let sent = state.payouts.sent_notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url, CALLBACK_URL);
    let callback: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(callback["status"], "PAID");
    assert_eq!(
        callback["payoutInstructionUUID"],
        instruction_uuid(order.settlement_id)
    );

    state.payouts.set_notifications(Notifications::Withhold);
    rail.submit(&self::order("46701234567")).await.unwrap();
    assert_eq!(state.payouts.sent_notifications().len(), 1);
}

#[test]
fn swish_rail_refuses_unusable_keys_and_plain_http_callbacks_naming_the_key() {
    let mut config = config("http://127.0.0.1:1/swish".into());
    config.signing_key_file = "config/sandbox/README.md".into();
    let error = SwishRail::try_new(&config, TIMEOUT).err().unwrap();
    assert!(
        matches!(&error, RailError::Config(m) if m.contains("signing_key_file")),
        "{error:?}"
    );
    config.signing_key_file = SWISH_SIGNING_KEY_FILE.into();
    config.client_cert_file = Some("config/sandbox/missing.pem".into());
    assert!(matches!(
        SwishRail::try_new(&config, TIMEOUT),
        Err(RailError::Config(_))
    ));
    config.client_cert_file = None;
    config.callback_url = "http://kvitto.example.se/callbacks/swish/payouts/x".into();
    let error = SwishRail::try_new(&config, TIMEOUT).err().unwrap();
    assert!(
        matches!(&error, RailError::Config(m) if m.contains("callback_url")),
        "{error:?}"
    );
}

#[test]
fn swish_rail_reads_a_pkcs1_signing_key_too() {
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};

    let pem = std::fs::read_to_string(SWISH_SIGNING_KEY_FILE).unwrap();
    let key = RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
    let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), pkcs1.as_bytes()).unwrap();

    let mut config = config("http://127.0.0.1:1/swish".into());
    config.signing_key_file = file.path().into();
    let pkcs1_rail = SwishRail::try_new(&config, TIMEOUT).unwrap();
    // PKCS#1 v1.5 signatures are deterministic: the same key signs alike.
    assert_eq!(pkcs1_rail.sign(b"payload"), offline_rail().sign(b"payload"));
}
