//! Stripe Connect played by the sandbox: transfers, payouts, Express
//! accounts and onboarding links, with Stripe's idempotency and webhooks.
//!
//! Like Stripe ("Idempotent requests"), the first answer under an
//! `Idempotency-Key` (scoped to the `Stripe-Account` it was sent for) is
//! stored and replayed for a retry with the same endpoint and parameters;
//! other parameters under the same key answer 400 `idempotency_error`, and
//! a request while the first one under its key still runs answers 409.
//!
//! Outcomes are decided by ids, so tests choose them: a destination whose id
//! contains `missing` does not exist (400 `resource_missing`), a transfer
//! above [`PLATFORM_BALANCE_MINOR`] is `balance_insufficient`, a payout on
//! an account whose id contains `nopayouts` is refused with
//! `payouts_not_allowed` (its transfer can then be reversed), and a payout
//! on an account whose id contains `fail` ends `failed` with
//! `account_closed`; every other payout ends `paid`. A payout is answered
//! `pending` and is final at once for a later lookup. Unless notifications
//! are withheld, `transfer.created`, `payout.paid` and `payout.failed` are
//! then sent, signed, to kvitto's webhook URL of the first Stripe
//! integration (`sandbox.target_url` + `/webhooks/stripe/<id>`).

use actix_web::http::StatusCode;
use actix_web::web::{self, Form};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::{Value, json};

use super::api::STRIPE_VERSION;
use super::sandbox::stripe_id;
use super::signature::{SIGNATURE_HEADER, sign};
use crate::providers::ProviderKind;
use crate::sandbox::SandboxState;
use crate::sandbox::payouts::{
    Gate, KeyClaim, Notifications, PayoutOp, SentNotification, StoredAnswer, send_in_background,
};

/// What the platform can transfer, in minor units; more is refused.
pub const PLATFORM_BALANCE_MINOR: i64 = 100_000_000;

const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const STRIPE_ACCOUNT_HEADER: &str = "stripe-account";

type Params = Vec<(String, String)>;

/// The Connect routes, inside the `/stripe` scope.
pub fn routes(scope: &mut web::ServiceConfig) {
    scope
        .route("/v1/transfers", web::post().to(create_transfer))
        .route("/v1/transfers", web::get().to(list_transfers))
        .route(
            "/v1/transfers/{id}/reversals",
            web::post().to(create_transfer_reversal),
        )
        .route("/v1/payouts", web::post().to(create_payout))
        .route("/v1/payouts/{id}", web::get().to(get_payout))
        .route("/v1/accounts", web::post().to(create_account))
        .route("/v1/account_links", web::post().to(create_account_link));
}

/// One answer: a status and a JSON body.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body,
        }
    }

    fn invalid(code: &str, message: &str) -> Answer {
        Answer {
            status: StatusCode::BAD_REQUEST,
            body: error_body("invalid_request_error", Some(code), message),
        }
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(&self.body)
    }
}

fn error_body(kind: &str, code: Option<&str>, message: &str) -> Value {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    json!({ "error": error })
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn unauthorised() -> HttpResponse {
    HttpResponse::Unauthorized().json(error_body(
        "invalid_request_error",
        Some("api_key_invalid"),
        "Invalid API Key provided: sk_****",
    ))
}

/// The shared path of every write: credentials, the injected fault, the
/// idempotency replay, then `perform` and storing its answer.
async fn write(
    state: &SandboxState,
    request: &HttpRequest,
    op: PayoutOp,
    params: Params,
    perform: impl FnOnce(&SandboxState, &HttpRequest, &Params, Option<&str>) -> Answer,
) -> HttpResponse {
    if state
        .integration_with_bearer(ProviderKind::Stripe, request)
        .is_none()
    {
        return unauthorised();
    }
    let gate = state.payouts.before(op).await;
    if let Gate::Refuse(response) = gate {
        return response;
    }
    let key = header(request, IDEMPOTENCY_KEY_HEADER).map(|key| {
        let account = header(request, STRIPE_ACCOUNT_HEADER).unwrap_or("platform");
        format!("{account}|{key}")
    });
    let fingerprint = fingerprint(request.path(), &params);
    match key.as_deref().map(|k| state.payouts.claim_key(k)) {
        Some(KeyClaim::Answered(stored)) => {
            return gate.answer(replay(stored, &fingerprint).response());
        }
        Some(KeyClaim::InProgress) => return in_progress().response(),
        Some(KeyClaim::Fresh) | None => {}
    }
    let idempotency_key = header(request, IDEMPOTENCY_KEY_HEADER);
    let answer = perform(state, request, &params, idempotency_key);
    if let Some(key) = key.as_deref() {
        let stored = StoredAnswer {
            request: fingerprint,
            status: answer.status,
            body: answer.body.clone(),
        };
        state.payouts.store_answer(key, stored);
    }
    gate.answer(answer.response())
}

/// A second request under a key whose first one is still running.
fn in_progress() -> Answer {
    Answer {
        status: StatusCode::CONFLICT,
        body: error_body(
            "idempotency_error",
            Some("idempotency_key_in_use"),
            "There is currently another in-progress request using this Idempotent Key.",
        ),
    }
}

/// The endpoint and its parameters in a stable order.
fn fingerprint(path: &str, params: &Params) -> String {
    let mut sorted = params.clone();
    sorted.sort();
    format!("{path}?{sorted:?}")
}

fn replay(stored: StoredAnswer, fingerprint: &str) -> Answer {
    if stored.request != fingerprint {
        return Answer {
            status: StatusCode::BAD_REQUEST,
            body: error_body(
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters \
                 they were first used with.",
            ),
        };
    }
    Answer {
        status: stored.status,
        body: stored.body,
    }
}

fn amount_of(params: &Params) -> Result<i64, Answer> {
    param(params, "amount")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
        .ok_or_else(|| Answer::invalid("parameter_invalid_integer", "Invalid positive integer"))
}

async fn create_transfer(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    params: Form<Params>,
) -> HttpResponse {
    let op = PayoutOp::StripeTransfer;
    write(&state, &request, op, params.into_inner(), perform_transfer).await
}

fn perform_transfer(
    state: &SandboxState,
    _request: &HttpRequest,
    params: &Params,
    idempotency_key: Option<&str>,
) -> Answer {
    let amount = match amount_of(params) {
        Ok(amount) => amount,
        Err(answer) => return answer,
    };
    let destination = param(params, "destination").unwrap_or_default();
    if destination.is_empty() || destination.contains("missing") {
        let message = format!("No such destination: '{destination}'");
        return Answer::invalid("resource_missing", &message);
    }
    if amount > PLATFORM_BALANCE_MINOR {
        let message = "You have insufficient available funds in your Stripe account.";
        return Answer::invalid("balance_insufficient", message);
    }
    let transfer_group = param(params, "transfer_group");
    let transfer = json!({
        "id": stripe_id("tr_", &mut rand::thread_rng()),
        "object": "transfer",
        "amount": amount,
        "currency": param(params, "currency"),
        "created": Utc::now().timestamp(),
        "destination": destination,
        "livemode": false,
        "metadata": metadata(params),
        "transfer_group": transfer_group,
    });
    let id = transfer["id"].as_str().unwrap_or_default().to_string();
    state.payouts.put_object(&id, transfer.clone());
    let counted = transfer_group.or(param(params, "metadata[settlement_id]"));
    state
        .payouts
        .count_made(PayoutOp::StripeTransfer, counted.unwrap_or(&id));
    notify(state, "transfer.created", None, &transfer, idempotency_key);
    Answer::ok(transfer)
}

#[derive(serde::Deserialize)]
struct TransferQuery {
    transfer_group: Option<String>,
}

/// `GET /v1/transfers?transfer_group=...`: Stripe's list object, newest
/// first in Stripe; the sandbox has at most a handful per group.
async fn list_transfers(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    query: web::Query<TransferQuery>,
) -> HttpResponse {
    if state
        .integration_with_bearer(ProviderKind::Stripe, &request)
        .is_none()
    {
        return unauthorised();
    }
    if let Gate::Refuse(response) = state.payouts.before(PayoutOp::StripeTransferList).await {
        return response;
    }
    let group = query.transfer_group.clone();
    let data = state.payouts.objects_where(|object| {
        object["object"] == "transfer"
            && group
                .as_deref()
                .is_none_or(|g| object["transfer_group"].as_str() == Some(g))
    });
    HttpResponse::Ok().json(json!({
        "object": "list",
        "url": "/v1/transfers",
        "has_more": false,
        "data": data,
    }))
}

async fn create_transfer_reversal(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    params: Form<Params>,
) -> HttpResponse {
    let op = PayoutOp::StripeTransferReversal;
    write(&state, &request, op, params.into_inner(), perform_reversal).await
}

/// Reverses the whole transfer named in the path.
fn perform_reversal(
    state: &SandboxState,
    request: &HttpRequest,
    params: &Params,
    _idempotency_key: Option<&str>,
) -> Answer {
    let transfer_id = request.match_info().get("id").unwrap_or_default();
    let Some(mut transfer) = state.payouts.object(transfer_id) else {
        let message = format!("No such transfer: '{transfer_id}'");
        return Answer {
            status: StatusCode::NOT_FOUND,
            body: error_body("invalid_request_error", Some("resource_missing"), &message),
        };
    };
    transfer["reversed"] = json!(true);
    transfer["amount_reversed"] = transfer["amount"].clone();
    state.payouts.put_object(transfer_id, transfer.clone());
    let reversal = json!({
        "id": stripe_id("trr_", &mut rand::thread_rng()),
        "object": "transfer_reversal",
        "amount": transfer["amount"],
        "currency": transfer["currency"],
        "metadata": metadata(params),
        "transfer": transfer_id,
    });
    let counted = param(params, "metadata[settlement_id]").unwrap_or(transfer_id);
    state
        .payouts
        .count_made(PayoutOp::StripeTransferReversal, counted);
    Answer::ok(reversal)
}

/// `metadata[...]` parameters as Stripe's `metadata` object.
fn metadata(params: &Params) -> Value {
    let entries = params.iter().filter_map(|(key, value)| {
        let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
        Some((name.to_string(), Value::String(value.clone())))
    });
    Value::Object(entries.collect())
}

async fn create_payout(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    params: Form<Params>,
) -> HttpResponse {
    let op = PayoutOp::StripePayout;
    write(&state, &request, op, params.into_inner(), perform_payout).await
}

fn perform_payout(
    state: &SandboxState,
    request: &HttpRequest,
    params: &Params,
    idempotency_key: Option<&str>,
) -> Answer {
    let Some(account) = header(request, STRIPE_ACCOUNT_HEADER) else {
        let message = "The sandbox plays payouts of connected accounts only";
        return Answer::invalid("parameter_missing", message);
    };
    let amount = match amount_of(params) {
        Ok(amount) => amount,
        Err(answer) => return answer,
    };
    if account.contains("nopayouts") {
        let message = "Payouts have been disabled on this account.";
        return Answer::invalid("payouts_not_allowed", message);
    }
    let pending = json!({
        "id": stripe_id("po_", &mut rand::thread_rng()),
        "object": "payout",
        "amount": amount,
        "arrival_date": Utc::now().timestamp(),
        "created": Utc::now().timestamp(),
        "currency": param(params, "currency"),
        "destination": stripe_id("ba_", &mut rand::thread_rng()),
        "failure_code": null,
        "failure_message": null,
        "livemode": false,
        "metadata": metadata(params),
        "method": "standard",
        "statement_descriptor": param(params, "statement_descriptor"),
        "status": "pending",
        "type": "bank_account",
    });
    let id = pending["id"].as_str().unwrap_or_default().to_string();
    let settled = settle(&pending, account);
    state
        .payouts
        .put_object(&id, json!({ "account": account, "payout": settled }));
    let counted = param(params, "metadata[settlement_id]").unwrap_or(&id);
    state.payouts.count_made(PayoutOp::StripePayout, counted);
    let event_type = format!("payout.{}", settled["status"].as_str().unwrap_or("paid"));
    notify(state, &event_type, Some(account), &settled, idempotency_key);
    Answer::ok(pending)
}

/// The payout's final state: `failed` on an account whose id says `fail`.
fn settle(pending: &Value, account: &str) -> Value {
    let mut settled = pending.clone();
    if account.contains("fail") {
        settled["status"] = json!("failed");
        settled["failure_code"] = json!("account_closed");
        settled["failure_message"] = json!("The bank account has been closed.");
    } else {
        settled["status"] = json!("paid");
    }
    settled
}

async fn get_payout(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    if state
        .integration_with_bearer(ProviderKind::Stripe, &request)
        .is_none()
    {
        return unauthorised();
    }
    if let Gate::Refuse(response) = state.payouts.before(PayoutOp::StripePayoutGet).await {
        return response;
    }
    let account = header(&request, STRIPE_ACCOUNT_HEADER);
    let stored = state.payouts.object(&id);
    // Like Stripe, another account's payout does not exist for you.
    match stored.filter(|s| s["account"].as_str() == account) {
        Some(stored) => HttpResponse::Ok().json(&stored["payout"]),
        None => Answer {
            status: StatusCode::NOT_FOUND,
            body: error_body(
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such payout: '{id}'"),
            ),
        }
        .response(),
    }
}

async fn create_account(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    params: Form<Params>,
) -> HttpResponse {
    let op = PayoutOp::StripeAccount;
    write(&state, &request, op, params.into_inner(), perform_account).await
}

fn perform_account(
    state: &SandboxState,
    _request: &HttpRequest,
    params: &Params,
    _idempotency_key: Option<&str>,
) -> Answer {
    if param(params, "type") != Some("express") {
        return Answer::invalid(
            "parameter_invalid_empty",
            "The sandbox plays Express accounts",
        );
    }
    let account = json!({
        "id": stripe_id("acct_", &mut rand::thread_rng()),
        "object": "account",
        "business_type": param(params, "business_type"),
        "charges_enabled": false,
        "country": param(params, "country"),
        "details_submitted": false,
        "email": param(params, "email"),
        "metadata": metadata(params),
        "payouts_enabled": false,
        "type": "express",
    });
    let id = account["id"].as_str().unwrap_or_default().to_string();
    state.payouts.put_object(&id, account.clone());
    let business = param(params, "metadata[business_id]").unwrap_or(&id);
    state.payouts.count_made(PayoutOp::StripeAccount, business);
    Answer::ok(account)
}

async fn create_account_link(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    params: Form<Params>,
) -> HttpResponse {
    let op = PayoutOp::StripeAccountLink;
    write(
        &state,
        &request,
        op,
        params.into_inner(),
        perform_account_link,
    )
    .await
}

fn perform_account_link(
    state: &SandboxState,
    _request: &HttpRequest,
    params: &Params,
    _idempotency_key: Option<&str>,
) -> Answer {
    let account = param(params, "account").unwrap_or_default();
    if state.payouts.object(account).is_none() || !account.starts_with("acct_") {
        return Answer::invalid("resource_missing", &format!("No such account: '{account}'"));
    }
    let now = Utc::now().timestamp();
    let token = stripe_id("", &mut rand::thread_rng());
    Answer::ok(json!({
        "object": "account_link",
        "created": now,
        "expires_at": now + 300,
        "url": format!("https://connect.stripe.com/setup/e/{account}/{token}"),
    }))
}

/// Sends the event about `object` to kvitto, unless withheld.
fn notify(
    state: &SandboxState,
    event_type: &str,
    account: Option<&str>,
    object: &Value,
    idempotency_key: Option<&str>,
) {
    if state.payouts.notifications() == Notifications::Withhold {
        return;
    }
    let Some(integration) = state
        .config
        .integrations
        .iter()
        .find(|i| i.provider == ProviderKind::Stripe)
    else {
        return;
    };
    let mut event = json!({
        "id": stripe_id("evt_", &mut rand::thread_rng()),
        "object": "event",
        "api_version": STRIPE_VERSION,
        "created": Utc::now().timestamp(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": idempotency_key },
        "type": event_type,
    });
    if let Some(account) = account {
        event["account"] = json!(account);
    }
    let body = event.to_string().into_bytes();
    let secret = integration.signing_secrets.iter().find(|s| !s.is_empty());
    let signature = sign(
        secret.map_or("", String::as_str),
        Utc::now().timestamp(),
        &body,
    );
    let target = state.config.sandbox.target_url.trim_end_matches('/');
    let notification = SentNotification {
        url: format!("{target}/webhooks/stripe/{}", integration.id),
        headers: vec![
            (
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            ),
            (SIGNATURE_HEADER.into(), signature),
        ],
        body,
    };
    send_in_background(&state.payouts, notification);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testing;

    #[actix_rt::test]
    async fn sandbox_replays_a_key_for_the_same_parameters_and_refuses_others() {
        let (state, address) =
            testing::serve(super::super::sandbox::routes, |_| testing::demo_config());
        let token = testing::integration_of(&state.config, ProviderKind::Stripe)
            .api_token
            .unwrap();
        let transfer = |amount: &'static str| {
            reqwest::Client::new()
                .post(format!("http://{address}/stripe/v1/transfers"))
                .bearer_auth(&token)
                .header("Idempotency-Key", "kvitto-s1-transfer")
                .form(&[
                    ("amount", amount),
                    ("currency", "sek"),
                    ("destination", "acct_1"),
                    ("transfer_group", "s1"),
                ])
                .send()
        };
        let first: Value = transfer("100").await.unwrap().json().await.unwrap();
        let again: Value = transfer("100").await.unwrap().json().await.unwrap();
        assert_eq!(first, again);
        assert_eq!(state.payouts.made(PayoutOp::StripeTransfer, "s1"), 1);

        let other = transfer("200").await.unwrap();
        assert_eq!(other.status().as_u16(), 400);
        let body: Value = other.json().await.unwrap();
        assert_eq!(body["error"]["type"], "idempotency_error");
        assert_eq!(state.payouts.made(PayoutOp::StripeTransfer, "s1"), 1);
    }
}
