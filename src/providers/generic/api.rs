//! Looks a transaction up on the POS's own API: `GET
//! {api_base}/transactions/{id}` with the integration's bearer token,
//! answering the transaction shape the webhooks carry (without `event_id` and
//! `type`). The answer is the truth kvitto verifies the webhook against; an
//! answer about another transaction than the one asked for is refused.
//!
//! The adapter's API has no other endpoint, so the health probe looks up
//! [`PROBE_TRANSACTION_ID`], which no POS issues: 404 (or an answer) means
//! the API accepted the token, 401 or 403 that it did not.

use reqwest::{StatusCode, Url};

use super::decode::TransactionBody;
use crate::config::IntegrationConfig;
use crate::health::ProbeFailure;
use crate::health::probe::{expect_status, send_once};
use crate::providers::api_client::api_url;
use crate::providers::{ApiClient, ApiError, ProviderKind, ProviderTruth};

const ENDPOINT_TRANSACTIONS_GET: &str = "transactions.get";
const ENDPOINT_PROBE: &str = "transactions.probe";

/// The transaction id the health probe asks for.
pub const PROBE_TRANSACTION_ID: &str = "kvitto-health-check";

/// Checks that the POS API answers a lookup with the integration's token.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    let token = integration
        .api_token
        .as_deref()
        .ok_or_else(|| ProbeFailure::misconfigured("generic integration has no api_token"))?;
    let url = transaction_url(integration.api_base(), PROBE_TRANSACTION_ID)?;
    let request = client
        .http_for(integration)?
        .get(url)
        .bearer_auth(token)
        .header("Accept", "application/json");
    let response = send_once(ProviderKind::Generic, ENDPOINT_PROBE, request).await?;
    expect_status(&response, &[StatusCode::NOT_FOUND, StatusCode::OK])
}

pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    let token = integration
        .api_token
        .as_deref()
        .ok_or_else(|| ApiError::permanent("generic integration has no api_token"))?;
    let url = transaction_url(integration.api_base(), transaction_ref)?;
    let http = client.http_for(integration)?;

    let body: TransactionBody = client
        .send_json(ProviderKind::Generic, ENDPOINT_TRANSACTIONS_GET, || {
            http.get(url.clone())
                .bearer_auth(token)
                .header("Accept", "application/json")
        })
        .await?;
    let truth = body
        .into_truth()
        .map_err(|e| ApiError::permanent(format!("{ENDPOINT_TRANSACTIONS_GET}: {e}")))?;
    if truth.transaction_ref != transaction_ref {
        return Err(ApiError::permanent(format!(
            "{ENDPOINT_TRANSACTIONS_GET}: answer is about another transaction"
        )));
    }
    Ok(truth)
}

/// The lookup URL, with the transaction id percent-encoded as one path
/// segment: it comes from an untrusted webhook and must not climb the path.
/// `.` and `..` cannot be encoded away (URL parsing resolves them), and no
/// POS names a transaction so: the provider cannot know it.
fn transaction_url(api_base: &str, transaction_ref: &str) -> Result<Url, ApiError> {
    if matches!(transaction_ref, "" | "." | "..") {
        return Err(ApiError::NotFound);
    }
    api_url(
        ProviderKind::Generic,
        api_base,
        &["transactions", transaction_ref],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_id_cannot_escape_its_path_segment() {
        let url = transaction_url("http://127.0.0.1:8090/generic/", "../admin?x=1#y").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8090/generic/transactions/..%2Fadmin%3Fx=1%23y"
        );
    }

    #[test]
    fn dot_segments_stay_below_transactions() {
        for id in ["%2e%2e", "a/../../b", "..."] {
            let url = transaction_url("http://127.0.0.1:8090/generic", id).unwrap();
            assert!(
                url.path().starts_with("/generic/transactions/"),
                "{id:?} gave {url}"
            );
            assert_eq!(url.path_segments().unwrap().count(), 3, "{id:?} gave {url}");
        }
    }

    #[test]
    fn dot_and_empty_ids_are_unknown_without_asking() {
        for id in ["", ".", ".."] {
            let outcome = transaction_url("http://127.0.0.1:8090/generic", id);
            assert_eq!(outcome.unwrap_err(), ApiError::NotFound, "{id:?}");
        }
    }

    #[test]
    fn unusable_api_base_is_permanent() {
        assert!(matches!(
            transaction_url("not a url", "t"),
            Err(ApiError::Permanent(_))
        ));
        assert!(matches!(
            transaction_url("mailto:x@example.se", "t"),
            Err(ApiError::Permanent(_))
        ));
    }
}
