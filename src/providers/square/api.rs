//! Square's Payments API: the truth a Square webhook is verified against.
//!
//! `GET /v2/payments/{payment_id}` with the merchant's access token as a
//! bearer token and a pinned `Square-Version` (Square API reference,
//! "RetrievePayment"). It answers `{"payment": {...}}`, or 404 with
//! `{"errors": [{"category": "INVALID_REQUEST_ERROR", "code": "NOT_FOUND"}]}`
//! for a payment the merchant does not have.
//!
//! The health probe reads `GET /v2/locations` ("ListLocations"), which every
//! access token may call and which changes nothing.
//!
//! Guarantee: a [`ProviderTruth`] is returned only when the answer is about
//! the payment asked for and carries every fact kvitto stores; anything less
//! is a permanent error, never a guess.

use reqwest::header::ACCEPT;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::decode::{Payment, payment_facts};
use crate::config::IntegrationConfig;
use crate::health::ProbeFailure;
use crate::health::probe::{expect_status, send_once};
use crate::providers::api_client::api_url;
use crate::providers::{ApiClient, ApiError, ProviderKind, ProviderTruth};

/// The API version kvitto was written against; pinned so the answer's shape
/// does not change with the application's default version.
pub const SQUARE_VERSION: &str = "2024-10-17";

const SQUARE_VERSION_HEADER: &str = "Square-Version";

/// The `endpoint` metric label of the payment lookup.
const PAYMENTS_GET_ENDPOINT: &str = "payments.get";
/// The `endpoint` metric label of the health probe.
const LOCATIONS_LIST_ENDPOINT: &str = "locations.list";

#[derive(Debug, Deserialize)]
struct PaymentAnswer {
    payment: Payment,
}

/// Looks a payment up by its Square id.
pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    let token = integration
        .api_token
        .as_deref()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::permanent("square integration has no api_token"))?;
    let url = payment_url(integration.api_base(), transaction_ref)?;
    let http = client.http_for(integration)?;

    let answer: PaymentAnswer = client
        .send_json(ProviderKind::Square, PAYMENTS_GET_ENDPOINT, || {
            http.get(url.clone())
                .bearer_auth(token)
                .header(SQUARE_VERSION_HEADER, SQUARE_VERSION)
                .header(ACCEPT, "application/json")
        })
        .await?;
    truth(&answer.payment, transaction_ref)
}

/// Checks that Square answers `ListLocations` with the access token.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    let token = integration
        .api_token
        .as_deref()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ProbeFailure::misconfigured("square integration has no api_token"))?;
    let url = api_url(
        ProviderKind::Square,
        integration.api_base(),
        &["v2", "locations"],
    )?;
    let request = client
        .http_for(integration)?
        .get(url)
        .bearer_auth(token)
        .header(SQUARE_VERSION_HEADER, SQUARE_VERSION)
        .header(ACCEPT, "application/json");
    let response = send_once(ProviderKind::Square, LOCATIONS_LIST_ENDPOINT, request).await?;
    expect_status(&response, &[StatusCode::OK])
}

/// `{api_base}/v2/payments/{id}`, with the id percent-encoded as one path
/// segment so an id can never reach another endpoint.
fn payment_url(api_base: &str, payment_id: &str) -> Result<Url, ApiError> {
    if payment_id.is_empty() {
        return Err(ApiError::permanent("empty square payment id"));
    }
    api_url(
        ProviderKind::Square,
        api_base,
        &["v2", "payments", payment_id],
    )
}

fn truth(payment: &Payment, transaction_ref: &str) -> Result<ProviderTruth, ApiError> {
    let facts =
        payment_facts(payment).map_err(|e| ApiError::permanent(format!("payments.get: {e}")))?;
    if facts.transaction_ref != transaction_ref {
        return Err(ApiError::permanent(
            "payments.get answered about another payment",
        ));
    }
    let missing =
        |field: &str| ApiError::permanent(format!("payments.get: payment without {field}"));
    let updated_at = facts.updated_at.ok_or_else(|| missing("updated_at"))?;
    Ok(ProviderTruth {
        transaction_ref: facts.transaction_ref,
        amount_minor: facts.amount_minor.ok_or_else(|| missing("total_money"))?,
        currency: facts.currency.ok_or_else(|| missing("currency"))?,
        state: facts.state.ok_or_else(|| missing("status"))?,
        occurred_at: facts.occurred_at.ok_or_else(|| missing("created_at"))?,
        source_version: updated_at.timestamp_millis(),
        location_ref: facts.location_ref,
        line_items: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_payment_url_encodes_the_id_as_one_segment() {
        let url = payment_url(
            "http://127.0.0.1:8090/square",
            "KkAkhdMsgzn59SM8A89WgKwekxLZY",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8090/square/v2/payments/KkAkhdMsgzn59SM8A89WgKwekxLZY"
        );
        let url = payment_url("https://connect.squareup.com", "../../v1/x?y#z").unwrap();
        assert_eq!(
            url.as_str(),
            "https://connect.squareup.com/v2/payments/..%2F..%2Fv1%2Fx%3Fy%23z"
        );
    }

    #[test]
    fn square_payment_url_rejects_empty_id_and_bad_base() {
        assert!(payment_url("https://connect.squareup.com", "").is_err());
        assert!(payment_url("", "abc").is_err());
        assert!(payment_url("mailto:x@example.se", "abc").is_err());
    }

    #[test]
    fn square_answer_about_another_payment_is_permanent() {
        let payment: Payment = serde_json::from_str(
            r#"{"id":"other","created_at":"2026-03-02T09:14:58Z","updated_at":"2026-03-02T09:15:02Z",
                "total_money":{"amount":100,"currency":"SEK"},"status":"COMPLETED"}"#,
        )
        .unwrap();
        assert!(matches!(
            truth(&payment, "asked"),
            Err(ApiError::Permanent(_))
        ));
        assert!(truth(&payment, "other").is_ok());
    }

    #[test]
    fn square_answer_missing_a_fact_is_permanent() {
        let payment: Payment = serde_json::from_str(
            r#"{"id":"p","created_at":"2026-03-02T09:14:58Z","updated_at":"2026-03-02T09:15:02Z",
                "status":"COMPLETED"}"#,
        )
        .unwrap();
        assert!(matches!(truth(&payment, "p"), Err(ApiError::Permanent(_))));
    }
}
