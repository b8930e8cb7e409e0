//! Swish payouts played by the sandbox: `POST /swish/api/v1/payouts/` and
//! `GET /swish/api/v1/payouts/{payoutInstructionUUID}`, then the callback.
//!
//! A payout request is accepted only when its signature verifies, with the
//! public half of the sandbox signing key, over the SHA-512 hash of the
//! exact `payload` bytes received, and its fields have Swish's shapes:
//! 32 upper-case hex digits for the instruction UUID, 12 digits for the
//! SSN, an amount with two decimals, `SEK`, `PAYOUT`. A reused instruction
//! UUID answers 409 with `RP09`. Accepted payouts answer 201 with a
//! `Location` and no body, are `CREATED`, and are final at once for later
//! lookups: `ERROR` (`RF07`) for a payee number containing `0000`, `PAID`
//! otherwise. The final payout is then POSTed to the request's
//! `callbackUrl`, unless notifications are withheld.
//!
//! Error codes follow Swish's list where one fits (`PA02` amount, `AM02`
//! amount too large, `AM03` currency, `RP09` duplicate, `RF07` declined);
//! a signature that does not verify and any other malformed field answer
//! `PA01`, the sandbox's choice.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use crate::sandbox::SandboxState;
use crate::sandbox::payouts::{
    Gate, Notifications, PayoutOp, SentNotification, send_in_background,
};

/// The largest payout the sandbox makes, in öre (its own limit).
pub const MAX_PAYOUT_MINOR: i64 = 1_500_000;

/// Payee numbers containing this end in `ERROR`.
pub const FAILING_PAYEE_MARK: &str = "0000";

pub fn routes(scope: &mut web::ServiceConfig) {
    scope
        .route("/api/v1/payouts/", web::post().to(create_payout))
        .route("/api/v1/payouts/{id}", web::get().to(get_payout));
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayoutRequest<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
    callback_url: String,
    signature: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "payoutInstructionUUID")]
    payout_instruction_uuid: String,
    #[serde(rename = "payerPaymentReference")]
    payer_payment_reference: String,
    #[serde(rename = "payerAlias")]
    payer_alias: String,
    #[serde(rename = "payeeAlias")]
    payee_alias: String,
    #[serde(rename = "payeeSSN")]
    payee_ssn: String,
    amount: String,
    currency: String,
    #[serde(rename = "payoutType")]
    payout_type: String,
    #[serde(default)]
    message: String,
    #[serde(rename = "instructionDate")]
    instruction_date: String,
    #[serde(rename = "signingCertificateSerialNumber")]
    signing_certificate_serial_number: String,
}

fn refuse(code: &str, message: &str) -> HttpResponse {
    HttpResponse::UnprocessableEntity()
        .json(json!([{ "errorCode": code, "errorMessage": message }]))
}

async fn create_payout(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let gate = state.payouts.before(PayoutOp::SwishPayout).await;
    if let Gate::Refuse(response) = gate {
        return response;
    }
    let Ok(payout) = serde_json::from_slice::<PayoutRequest<'_>>(&body) else {
        return refuse("PA01", "the body is not a payout request");
    };
    let Some(public_key) = state.payouts.swish_public_key() else {
        return HttpResponse::InternalServerError().body("sandbox has no swish signing key");
    };
    if !verifies(public_key, &payout) {
        return refuse("PA01", "the payload signature does not verify");
    }
    let payload: Payload = match serde_json::from_str(payout.payload.get()) {
        Ok(payload) => payload,
        Err(e) => return refuse("PA01", &format!("payload: {e}")),
    };
    if let Err((code, message)) = validate(&payload) {
        return refuse(code, message);
    }
    let uuid = payload.payout_instruction_uuid.clone();
    if state.payouts.object(&uuid).is_some() {
        let message = "The given instructionUUID is not available";
        return HttpResponse::Conflict()
            .json(json!([{ "errorCode": "RP09", "errorMessage": message }]));
    }
    make_payout(&state, &payload, &payout.callback_url);
    let info = request.connection_info();
    let location = format!(
        "{}://{}/swish/api/v1/payouts/{uuid}",
        info.scheme(),
        info.host()
    );
    gate.answer(
        HttpResponse::Created()
            .insert_header(("Location", location))
            .finish(),
    )
}

/// Whether the signature verifies over the SHA-512 hash of the payload
/// as received.
fn verifies(public_key: rsa::RsaPublicKey, payout: &PayoutRequest<'_>) -> bool {
    let digest = Sha512::digest(payout.payload.get().as_bytes());
    BASE64
        .decode(&payout.signature)
        .ok()
        .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
        .is_some_and(|signature| {
            VerifyingKey::<Sha512>::new(public_key)
                .verify(&digest, &signature)
                .is_ok()
        })
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `"12.50"`: digits, a point, two digits; in öre.
fn amount_minor(amount: &str) -> Option<i64> {
    let (whole, fraction) = amount.split_once('.')?;
    if !all_digits(whole) || fraction.len() != 2 || !all_digits(fraction) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    whole.checked_mul(100)?.checked_add(fraction.parse().ok()?)
}

/// The first field that does not have Swish's shape, as an error code
/// and message.
fn validate(payload: &Payload) -> Result<(), (&'static str, &'static str)> {
    let uuid = &payload.payout_instruction_uuid;
    let upper_hex =
        uuid.len() == 32 && uuid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
    let checks = [
        (
            upper_hex,
            "PA01",
            "payoutInstructionUUID is not 32 upper-case hex digits",
        ),
        (
            payload.payee_ssn.len() == 12 && all_digits(&payload.payee_ssn),
            "PA01",
            "payeeSSN is not 12 digits",
        ),
        (
            all_digits(&payload.payer_alias),
            "PA01",
            "payerAlias is not a Swish number",
        ),
        (
            all_digits(&payload.payee_alias),
            "PA01",
            "payeeAlias is not a Swish number",
        ),
        (
            payload.currency == "SEK",
            "AM03",
            "Invalid or missing Currency",
        ),
        (
            payload.payout_type == "PAYOUT",
            "PA01",
            "payoutType is not PAYOUT",
        ),
        (
            payload.message.chars().count() <= 50,
            "PA01",
            "message is longer than 50 characters",
        ),
        (
            !payload.payer_payment_reference.is_empty(),
            "PA01",
            "payerPaymentReference is missing",
        ),
        (
            chrono::DateTime::parse_from_rfc3339(&payload.instruction_date).is_ok(),
            "PA01",
            "instructionDate is not RFC 3339",
        ),
        (
            !payload.signing_certificate_serial_number.is_empty(),
            "PA01",
            "signingCertificateSerialNumber is missing",
        ),
    ];
    if let Some((_, code, message)) = checks.iter().find(|(ok, _, _)| !ok) {
        return Err((code, message));
    }
    match amount_minor(&payload.amount) {
        None | Some(0) => Err(("PA02", "Amount value is missing or not a valid number")),
        Some(amount) if amount > MAX_PAYOUT_MINOR => Err(("AM02", "Amount value is too large")),
        Some(_) => Ok(()),
    }
}

/// Stores the payout as final, counts it and sends the callback.
fn make_payout(state: &SandboxState, payload: &Payload, callback_url: &str) {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let uuid = &payload.payout_instruction_uuid;
    let failing = payload.payee_alias.contains(FAILING_PAYEE_MARK);
    let (status, error_code, error_message, date_paid) = if failing {
        (
            "ERROR",
            json!("RF07"),
            json!("Transaction declined"),
            Value::Null,
        )
    } else {
        ("PAID", Value::Null, Value::Null, json!(now))
    };
    let digest = Sha512::digest(uuid.as_bytes());
    let payout = json!({
        "paymentReference": hex::encode_upper(&digest[..16]),
        "payoutInstructionUUID": uuid,
        "payerPaymentReference": payload.payer_payment_reference,
        "callbackUrl": callback_url,
        "payerAlias": payload.payer_alias,
        "payeeAlias": payload.payee_alias,
        "payeeSSN": payload.payee_ssn,
        "amount": payload.amount,
        "currency": payload.currency,
        "message": payload.message,
        "payoutType": payload.payout_type,
        "status": status,
        "dateCreated": now,
        "datePaid": date_paid,
        "errorMessage": error_message,
        "errorCode": error_code,
        "additionalInformation": null,
    });
    state.payouts.put_object(uuid, payout.clone());
    state.payouts.count_made(PayoutOp::SwishPayout, uuid);
    if state.payouts.notifications() == Notifications::Send {
        let notification = SentNotification {
            url: callback_url.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: payout.to_string().into_bytes(),
        };
        send_in_background(&state.payouts, notification);
    }
}

/// Real Swish authenticates this by the TLS client certificate; the
/// sandbox speaks plain HTTP and checks nothing.
async fn get_payout(state: web::Data<SandboxState>, id: web::Path<String>) -> HttpResponse {
    if let Gate::Refuse(response) = state.payouts.before(PayoutOp::SwishPayoutGet).await {
        return response;
    }
    match state.payouts.object(&id) {
        Some(payout) if payout.get("payoutInstructionUUID").is_some() => {
            HttpResponse::Ok().json(payout)
        }
        _ => HttpResponse::NotFound().finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_reads_swish_amounts_with_exactly_two_decimals() {
        assert_eq!(amount_minor("12.50"), Some(1_250));
        assert_eq!(amount_minor("0.05"), Some(5));
        for bad in ["12.5", "12", "12.500", "-1.00", "1e2.00", ".50", "12,50"] {
            assert_eq!(amount_minor(bad), None, "{bad}");
        }
    }
}
