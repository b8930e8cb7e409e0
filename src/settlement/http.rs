//! The settlement API on the webhook listener.
//!
//! - `POST /v1/feedback` (the feedback service, a business's key): 202 once
//!   the feedback is durable on `kvitto.feedback`, like a webhook.
//! - `GET /v1/feedback/{id}` (the same key): where a feedback stands.
//! - `GET /v1/review`, `POST /v1/review/{id}/approve|reject` (staff keys):
//!   the feedback held for a person, and their decisions, recorded with the
//!   reviewer's name and note.
//! - `POST /v1/onboarding/stripe`, `GET /v1/onboarding/stripe/link` (a
//!   business's key): a Stripe Express account for the business and its
//!   onboarding link.
//! - `POST /callbacks/swish/payouts/{token}`: Swish's payout callback, a
//!   hint that makes kvitto ask Swish at once; never trusted by itself.
//!
//! Every refusal is decided in [`ApiError`]'s one `ResponseError` impl,
//! which names the offending field and never echoes internals or secrets.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::engine::report_settled;
use super::feedback::{Feedback, InvalidFeedback};
use super::rails::{OnboardingRequest, RailError, Rails};
use super::store::{self as rows, FeedbackState, MatchedPurchase, Review};
use crate::bus::{Bus, BusMessage};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Held feedback listed per request.
const MAX_REVIEW_ITEMS: i64 = 200;
/// Longest reviewer note kept.
const MAX_NOTE_CHARS: usize = 500;
/// What a client is told to wait when the bus cannot take feedback.
const RETRY_AFTER_SECS: u64 = 5;

pub struct ApiState {
    pub config: Config,
    pub store: Store,
    pub bus: Bus,
    pub rails: Rails,
    /// Bodies being read at once, as for webhooks.
    inflight: tokio::sync::Semaphore,
}

/// Registers the routes (on the webhook listener's `App`).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/feedback", web::post().to(post_feedback))
        .route("/v1/feedback/{id}", web::get().to(get_feedback))
        .route("/v1/review", web::get().to(list_review))
        .route("/v1/review/{id}/approve", web::post().to(approve))
        .route("/v1/review/{id}/reject", web::post().to(reject))
        .route("/v1/onboarding/stripe", web::post().to(onboard))
        .route("/v1/onboarding/stripe/link", web::get().to(onboarding_link))
        .route(
            "/callbacks/swish/payouts/{token}",
            web::post().to(swish_payout_callback),
        );
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or malformed Authorization: Bearer header")]
    Unauthenticated,
    #[error("the key is not one this endpoint takes")]
    UnknownKey,
    #[error("this key may not do that")]
    Forbidden,
    #[error("{0}")]
    Invalid(InvalidFeedback),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("bus unavailable")]
    Unavailable,
    #[error("too many requests in flight")]
    Overloaded,
    #[error("the request body took too long to arrive")]
    Timeout,
    #[error("the request body is over {0} bytes")]
    TooLarge(usize),
    #[error("provider refused: {0}")]
    ProviderRefused(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl From<RailError> for ApiError {
    fn from(error: RailError) -> Self {
        match error {
            RailError::Refused(reason) => ApiError::ProviderRefused(reason),
            RailError::Transient(_) => ApiError::Unavailable,
            RailError::Config(reason) => ApiError::Internal(reason),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::UnknownKey => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ProviderRefused(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let body = match self {
            ApiError::Unauthenticated | ApiError::UnknownKey => {
                json!({"error": "unauthenticated", "message": self.to_string()})
            }
            ApiError::Forbidden => json!({"error": "forbidden", "message": self.to_string()}),
            ApiError::Invalid(invalid) => json!({
                "error": "invalid_request",
                "field": invalid.field,
                "message": invalid.reason,
            }),
            ApiError::NotFound => json!({"error": "not_found"}),
            ApiError::Conflict(reason) => json!({"error": "conflict", "message": reason}),
            ApiError::Unavailable => {
                response.insert_header((RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
                json!({"error": "unavailable", "message": "try again later"})
            }
            ApiError::Overloaded => {
                response.insert_header((RETRY_AFTER, "1"));
                json!({"error": "overloaded", "message": self.to_string()})
            }
            ApiError::Timeout => json!({"error": "timeout", "message": self.to_string()}),
            ApiError::TooLarge(_) => json!({"error": "too_large", "message": self.to_string()}),
            ApiError::ProviderRefused(reason) => {
                json!({"error": "provider_refused", "message": reason})
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "settlement api request failed");
                json!({"error": "internal"})
            }
        };
        response.json(body)
    }
}

/// The largest body the settlement API reads.
const MAX_API_BODY_BYTES: usize = 16 * 1024;

/// Reads a request's body once the caller is known to be allowed: within
/// [`MAX_API_BODY_BYTES`], `server.request_timeout_ms` and the listener's
/// cap on bodies in flight, like a webhook's.
async fn read_body(
    state: &ApiState,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<Vec<u8>, ApiError> {
    let _permit = state
        .inflight
        .try_acquire()
        .map_err(|_| ApiError::Overloaded)?;
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let read = crate::ingress::read_body(request, payload, MAX_API_BODY_BYTES);
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::Timeout),
        Ok(Ok(body)) => Ok(body),
        Ok(Err(crate::ingress::BodyError::TooLarge)) => Err(ApiError::TooLarge(MAX_API_BODY_BYTES)),
        Ok(Err(crate::ingress::BodyError::Unreadable)) => Err(invalid("body", "could not be read")),
    }
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::Invalid(InvalidFeedback {
        field: field.into(),
        reason: reason.into(),
    })
}

fn bearer(request: &HttpRequest) -> Result<&str, ApiError> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or(ApiError::Unauthenticated)
}

fn keys_equal(presented: &str, configured: &str) -> bool {
    presented.as_bytes().ct_eq(configured.as_bytes()).into()
}

/// The business whose feedback-service key the request carries.
fn business_of(state: &ApiState, request: &HttpRequest) -> Result<String, ApiError> {
    let presented = bearer(request)?;
    state
        .config
        .settlement
        .api_keys
        .iter()
        .find(|key| keys_equal(presented, &key.key))
        .map(|key| key.business_id.clone())
        .ok_or(ApiError::UnknownKey)
}

/// The reviewer whose staff key the request carries.
fn staff_of(state: &ApiState, request: &HttpRequest) -> Result<String, ApiError> {
    let presented = bearer(request)?;
    if state
        .config
        .settlement
        .api_keys
        .iter()
        .any(|key| keys_equal(presented, &key.key))
    {
        return Err(ApiError::Forbidden);
    }
    state
        .config
        .settlement
        .staff_keys
        .iter()
        .find(|key| keys_equal(presented, &key.key))
        .map(|key| key.name.clone())
        .ok_or(ApiError::UnknownKey)
}

async fn post_feedback(
    state: web::Data<ApiState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let business_id = business_of(&state, &request)?;
    let body = read_body(&state, &request, payload).await?;
    let feedback = Feedback::parse(&body).map_err(ApiError::Invalid)?;
    if feedback.business_id != business_id {
        return Err(ApiError::Forbidden);
    }
    // Feedback ids are one namespace across businesses (the feedback
    // service issues them). Another business's id is refused here; intake
    // dead-letters one that slips past in a race.
    if let Some(stored) = rows::feedback(state.store.pool(), &feedback.feedback_id).await?
        && stored.feedback.business_id != business_id
    {
        return Err(ApiError::Conflict(
            "feedback_id is already taken; the feedback service must issue unique ids".into(),
        ));
    }
    let message = BusMessage {
        key: feedback.feedback_id.clone(),
        payload: body.to_vec(),
        headers: vec![("content-type".into(), "application/json".into())],
    };
    let timeout = Duration::from_millis(state.config.bus.publish_timeout_ms);
    // 202 only once the bus confirmed the write: from here on the feedback
    // cannot be lost. Any bus error means it may not be stored, so the
    // client is told to send it again (the same id is one feedback).
    match state
        .bus
        .publish(&state.config.bus.feedback_topic(), &message, timeout)
        .await
    {
        Ok(()) => Ok(HttpResponse::Accepted().json(json!({
            "feedback_id": feedback.feedback_id,
            "status": "accepted",
        }))),
        Err(error) => {
            tracing::warn!(%error, "feedback not accepted: bus did not confirm the write");
            Err(ApiError::Unavailable)
        }
    }
}

async fn get_feedback(
    state: web::Data<ApiState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let business_id = business_of(&state, &request)?;
    let record = rows::feedback(state.store.pool(), &path)
        .await?
        .filter(|r| r.feedback.business_id == business_id)
        .ok_or(ApiError::NotFound)?;
    let settlement = rows::settlement(
        state.store.pool(),
        &super::settlement_id(&record.feedback.feedback_id).to_string(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "feedback_id": record.feedback.feedback_id,
        "state": record.state.as_str(),
        "reason": record.reason,
        "purchase_ref": record.purchase_ref,
        "settlement": settlement.map(|s| json!({
            "settlement_id": s.id.to_string(),
            "state": s.state.as_str(),
            "amount_minor": s.amount_minor,
            "currency": s.currency,
            "rail": s.rail().as_str(),
        })),
    })))
}

async fn list_review(
    state: web::Data<ApiState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    staff_of(&state, &request)?;
    let mut items = Vec::new();
    for held in [FeedbackState::Ambiguous, FeedbackState::NoMatchingPurchase] {
        for record in rows::feedback_in_state(state.store.pool(), held, MAX_REVIEW_ITEMS).await? {
            let f = &record.feedback;
            items.push(json!({
                "feedback_id": f.feedback_id,
                "business_id": f.business_id,
                "location_id": f.location_id,
                "state": record.state.as_str(),
                "reason": record.reason,
                "quality_score": f.quality_score,
                "purchase": f.purchase,
                "received_at": crate::store::format_time(record.received_at),
            }));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "held": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// kvitto's transaction id of the purchase.
    transaction_id: Option<String>,
    /// Or a paper receipt the reviewer saw.
    receipt: Option<Receipt>,
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Receipt {
    number: String,
    amount_minor: i64,
    currency: String,
    occurred_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    note: String,
}

/// A review decision's body: every one carries a note.
trait Decision: serde::de::DeserializeOwned {
    fn note(&self) -> &str;
}

impl Decision for ApproveBody {
    fn note(&self) -> &str {
        &self.note
    }
}

impl Decision for RejectBody {
    fn note(&self) -> &str {
        &self.note
    }
}

/// What every review decision starts from: the reviewer, their decision
/// (with a sound note) and the held feedback it is about.
async fn review_request<T: Decision>(
    state: &ApiState,
    request: &HttpRequest,
    feedback_id: &str,
    payload: web::Payload,
) -> Result<(String, T, rows::FeedbackRecord), ApiError> {
    let reviewer = staff_of(state, request)?;
    let body = read_body(state, request, payload).await?;
    let decision: T = parse_json(&body)?;
    check_note(decision.note())?;
    let record = held_feedback(state.store.pool(), feedback_id).await?;
    Ok((reviewer, decision, record))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::Invalid(InvalidFeedback {
            field,
            reason: error.into_inner().to_string(),
        })
    })
}

/// Free text kvitto stores: no control characters (PostgreSQL refuses a
/// NUL, and a line break forges log lines) beyond plain line breaks in
/// notes.
fn plain_text(text: &str, line_breaks: bool) -> bool {
    // U+2028 and U+2029 are line breaks too, to anything that prints logs.
    text.chars().all(|c| {
        let breaks_lines = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
        !breaks_lines || (line_breaks && matches!(c, '\n' | '\r' | '\t'))
    })
}

/// The largest amount a receipt may show: 10 million kronor.
const MAX_RECEIPT_MINOR: i64 = 1_000_000_000;

fn check_note(note: &str) -> Result<(), ApiError> {
    if note.trim().is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        return Err(invalid("note", "must be 1 to 500 characters saying why"));
    }
    if !plain_text(note, true) {
        return Err(invalid("note", "must not hold control characters"));
    }
    Ok(())
}

/// The feedback a reviewer decides on: it must exist and be held.
async fn held_feedback(pool: &sqlx::AnyPool, id: &str) -> Result<rows::FeedbackRecord, ApiError> {
    let record = rows::feedback(pool, id).await?.ok_or(ApiError::NotFound)?;
    if !record.state.is_held() {
        return Err(ApiError::Conflict(format!(
            "feedback is {}, not held for review",
            record.state.as_str()
        )));
    }
    Ok(record)
}

async fn approve(
    state: web::Data<ApiState>,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (reviewer, approval, record) =
        review_request::<ApproveBody>(&state, &request, &path, payload).await?;
    let pool = state.store.pool();
    let purchase = match (approval.transaction_id, approval.receipt) {
        (Some(id), None) => approved_transaction(&state, &record.feedback.business_id, &id).await?,
        (None, Some(receipt)) => approved_receipt(&record.feedback.business_id, receipt)?,
        _ => {
            return Err(invalid(
                "body",
                "give exactly one of transaction_id and receipt",
            ));
        }
    };
    let review = Review {
        reviewer,
        note: approval.note,
    };
    let rules = state.config.settlement.rules(&record.feedback.business_id);
    let outcome = rows::settle(pool, &record, &purchase, rules, Some(&review)).await?;
    // Refusals change nothing, so they are not counted as decisions.
    if outcome == rows::SettleOutcome::AlreadyDecided {
        return Err(ApiError::Conflict("feedback was decided meanwhile".into()));
    }
    if outcome == rows::SettleOutcome::PurchaseTaken {
        return Err(ApiError::Conflict(
            "that purchase already backs a reward".into(),
        ));
    }
    let now_in = report_settled(&outcome);
    Ok(HttpResponse::Ok().json(json!({
        "feedback_id": record.feedback.feedback_id,
        "state": now_in.as_str(),
        "reviewed_by": review.reviewer,
    })))
}

async fn approved_transaction(
    state: &ApiState,
    business_id: &str,
    transaction_id: &str,
) -> Result<MatchedPurchase, ApiError> {
    let transaction = state
        .store
        .transaction(transaction_id)
        .await?
        .filter(|t| t.business_id == business_id)
        .ok_or_else(|| {
            invalid(
                "transaction_id",
                "no transaction of this business has that id",
            )
        })?;
    let usable = transaction.verdict == crate::canonical::Verdict::Verified
        && transaction.state == crate::canonical::PaymentState::Completed;
    if !usable {
        return Err(invalid(
            "transaction_id",
            "the transaction is not verified and completed",
        ));
    }
    Ok(MatchedPurchase {
        purchase_ref: transaction.id.to_string(),
        amount_minor: transaction.amount_minor,
        currency: transaction.currency,
        occurred_at: transaction.occurred_at,
    })
}

fn approved_receipt(business_id: &str, receipt: Receipt) -> Result<MatchedPurchase, ApiError> {
    let number_ok = !receipt.number.is_empty()
        && receipt.number.len() <= 64
        && receipt
            .number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !number_ok {
        return Err(invalid(
            "receipt.number",
            "must be 1 to 64 of A-Z, a-z, 0-9 and -",
        ));
    }
    if !(1..=MAX_RECEIPT_MINOR).contains(&receipt.amount_minor) {
        return Err(invalid(
            "receipt.amount_minor",
            "must be 1 to 1000000000 (10 million kronor)",
        ));
    }
    // A receipt a person saw is of a purchase made already.
    if !crate::settlement::feedback::plausible_purchase_time(receipt.occurred_at) {
        return Err(invalid(
            "receipt.occurred_at",
            "must be a time between the year 2000 and now",
        ));
    }
    if receipt.currency.len() != 3 || !receipt.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "receipt.currency",
            "must be an upper-case ISO 4217 code",
        ));
    }
    // Receipt numbers are read off paper: `z-1042` and `Z-1042` are one.
    Ok(MatchedPurchase {
        purchase_ref: format!(
            "receipt:{business_id}:{}",
            receipt.number.to_ascii_uppercase()
        ),
        amount_minor: receipt.amount_minor,
        currency: receipt.currency,
        occurred_at: receipt.occurred_at,
    })
}

async fn reject(
    state: web::Data<ApiState>,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (reviewer, rejection, record) =
        review_request::<RejectBody>(&state, &request, &path, payload).await?;
    let pool = state.store.pool();
    let review = Review {
        reviewer,
        note: rejection.note,
    };
    let moved = rows::set_feedback_state(
        pool,
        &record.feedback.feedback_id,
        record.state,
        FeedbackState::Rejected,
        Some("rejected_by_review"),
        Some(&review),
    )
    .await?;
    if !moved {
        return Err(ApiError::Conflict("feedback was decided meanwhile".into()));
    }
    Ok(HttpResponse::Ok().json(json!({
        "feedback_id": record.feedback.feedback_id,
        "state": "rejected",
        "reviewed_by": review.reviewer,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnboardBody {
    company_name: String,
    registration_number: String,
    email: String,
}

async fn onboard(
    state: web::Data<ApiState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let business_id = business_of(&state, &request)?;
    let body = read_body(&state, &request, payload).await?;
    let onboarding: OnboardBody = parse_json(&body)?;
    let name = &onboarding.company_name;
    if name.trim().is_empty() || name.chars().count() > 200 || !plain_text(name, false) {
        return Err(invalid(
            "company_name",
            "must be 1 to 200 characters, none of them control characters",
        ));
    }
    let digits: String = onboarding
        .registration_number
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "registration_number",
            "must be a Swedish organisation number (NNNNNN-NNNN)",
        ));
    }
    if !onboarding.email.contains('@')
        || onboarding.email.len() > 254
        || !plain_text(&onboarding.email, false)
    {
        return Err(invalid("email", "must be an email address"));
    }
    let pool = state.store.pool();
    let account_id = match rows::stripe_account_of(pool, &business_id).await? {
        Some((account_id, _)) => account_id,
        None => {
            let request = OnboardingRequest {
                business_id: business_id.clone(),
                company_name: onboarding.company_name,
                registration_number: digits,
                email: onboarding.email,
            };
            let account_id = state.rails.create_connected_account(&request).await?;
            rows::upsert_stripe_account(pool, &account_id, Some(&business_id), [false; 3]).await?;
            account_id
        }
    };
    let url = state.rails.onboarding_link(&account_id).await?;
    Ok(HttpResponse::Created().json(json!({
        "business_id": business_id,
        "account_id": account_id,
        "onboarding_url": url,
    })))
}

async fn onboarding_link(
    state: web::Data<ApiState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let business_id = business_of(&state, &request)?;
    let (account_id, payouts_enabled) = rows::stripe_account_of(state.store.pool(), &business_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let url = state.rails.onboarding_link(&account_id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "account_id": account_id,
        "payouts_enabled": payouts_enabled,
        "onboarding_url": url,
    })))
}

/// Swish's callback body is the payout object; only its id is read.
#[derive(Debug, Deserialize)]
struct SwishPayoutCallback {
    #[serde(rename = "payoutInstructionUUID")]
    payout_instruction_uuid: String,
}

async fn swish_payout_callback(
    state: web::Data<ApiState>,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(swish) = &state.config.settlement.swish else {
        return Err(ApiError::NotFound);
    };
    if !keys_equal(&path, &swish.callback_token) {
        return Err(ApiError::NotFound);
    }
    let body = read_body(&state, &request, payload).await?;
    let callback: SwishPayoutCallback = parse_json(&body)?;
    // A hint only: the status is asked of Swish on the next tick.
    rows::recheck_now(
        state.store.pool(),
        &callback.payout_instruction_uuid,
        super::Rail::Swish,
    )
    .await?;
    Ok(HttpResponse::Ok().finish())
}

/// Builds the shared state for [`routes`].
pub fn state(config: Config, store: Store, bus: Bus, rails: Rails) -> Arc<ApiState> {
    let inflight = tokio::sync::Semaphore::new(config.server.max_inflight_webhooks);
    Arc::new(ApiState {
        config,
        store,
        bus,
        rails,
        inflight,
    })
}
