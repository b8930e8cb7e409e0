//! Swish payment request lookup: the truth behind an unsigned callback.
//!
//! `GET {api_base}/api/v1/paymentrequests/{id}` on the Swish Commerce API,
//! authenticated by the merchant's client certificate (mutual TLS through
//! [`ApiClient::http_for`]). The answer is the payment request itself, with
//! `amount` as a JSON number, read here without a float. A 404 means Swish
//! does not know the id; an answer about another id, or one whose fields do
//! not check, is permanent.
//!
//! Swish has no read endpoint without an id, so the health probe looks up
//! [`PROBE_PAYMENT_REQUEST_ID`], which no payment request has: a 404 proves
//! the API answered and the client certificate was accepted (a refused
//! certificate fails the TLS handshake, which shows as unreachable).

use reqwest::StatusCode;

use crate::config::IntegrationConfig;
use crate::health::ProbeFailure;
use crate::health::probe::{expect_status, send_once};
use crate::providers::swish::decode::{PaymentRequest, is_payment_request_id};
use crate::providers::{ApiClient, ApiError, ProviderKind, ProviderTruth};

const ENDPOINT_GET: &str = "paymentrequests.get";
const ENDPOINT_PROBE: &str = "paymentrequests.probe";

/// A well-formed payment request id that Swish never issues.
pub const PROBE_PAYMENT_REQUEST_ID: &str = "00000000000000000000000000000000";

/// Checks that the Swish API answers a lookup over the client certificate.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    let url = format!(
        "{}/api/v1/paymentrequests/{PROBE_PAYMENT_REQUEST_ID}",
        integration.api_base()
    );
    let request = client.http_for(integration)?.get(&url);
    let response = send_once(ProviderKind::Swish, ENDPOINT_PROBE, request).await?;
    expect_status(&response, &[StatusCode::NOT_FOUND, StatusCode::OK])
}

pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    // The id goes into the URL path: anything but Swish's own format could
    // point the request elsewhere.
    if !is_payment_request_id(transaction_ref) {
        return Err(ApiError::permanent("swish payment request id malformed"));
    }
    let http = client.http_for(integration)?;
    let url = format!(
        "{}/api/v1/paymentrequests/{transaction_ref}",
        integration.api_base()
    );
    let answer: PaymentRequest = client
        .send_json(ProviderKind::Swish, ENDPOINT_GET, || http.get(&url))
        .await?;
    if answer.id != transaction_ref {
        return Err(ApiError::permanent(
            "swish answered about another payment request",
        ));
    }
    let facts = answer
        .facts()
        .map_err(|reason| ApiError::permanent(format!("{ENDPOINT_GET}: {reason}")))?;
    Ok(ProviderTruth {
        transaction_ref: facts.transaction_ref,
        amount_minor: facts.amount_minor,
        currency: facts.currency,
        state: facts.state,
        occurred_at: facts.occurred_at,
        source_version: facts.source_version,
        location_ref: facts.location_ref,
        // Swish knows only a free-text message, no items.
        line_items: Vec::new(),
    })
}
