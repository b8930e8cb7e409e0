//! Stripe's API: the truth a Stripe event is verified against.
//!
//! `GET /v1/charges/{id}` for `ch_` ids and `GET /v1/payment_intents/{id}`
//! for `pi_` ids, with the secret key as a bearer token (Stripe API
//! reference, "Retrieve a charge", "Retrieve a PaymentIntent"). An unknown id
//! answers 404 with `{"error": {"type": "invalid_request_error", "code":
//! "resource_missing"}}`, which the client reports as
//! [`ApiError::NotFound`].
//!
//! The health probe reads `GET /v1/balance` ("Retrieve balance"), which any
//! secret or restricted key with read access may call.
//!
//! Guarantee: a [`ProviderTruth`] is returned only for an answer about the
//! object asked for. Stripe objects carry no `updated_at`, so the truth's
//! `source_version` is the moment of the lookup in milliseconds: the answer
//! is the object's state as of then, which is at least as new as every
//! event Stripe had created before it, on the same scale as event-based
//! claims (`created` × 1000).

use chrono::Utc;
use reqwest::header::ACCEPT;
use reqwest::{StatusCode, Url};

use super::decode::{Charge, Facts, PaymentIntent, charge_facts, payment_intent_facts};
use crate::config::IntegrationConfig;
use crate::health::ProbeFailure;
use crate::health::probe::{expect_status, send_once};
use crate::providers::api_client::api_url;
use crate::providers::{ApiClient, ApiError, ProviderKind, ProviderTruth};

/// The API version kvitto reads answers in; pinned so the shape of an answer
/// does not follow the account's default version.
pub const STRIPE_VERSION: &str = "2024-06-20";

const STRIPE_VERSION_HEADER: &str = "Stripe-Version";

/// The `endpoint` metric labels.
const CHARGES_GET_ENDPOINT: &str = "charges.get";
const PAYMENT_INTENTS_GET_ENDPOINT: &str = "payment_intents.get";
const BALANCE_GET_ENDPOINT: &str = "balance.get";

/// Looks a charge (`ch_...`) or payment intent (`pi_...`) up.
pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    let token = integration
        .api_token
        .as_deref()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::permanent("stripe integration has no api_token"))?;
    let http = client.http_for(integration)?;
    let api_base = integration.api_base();
    let request = |url: &Url| {
        http.get(url.clone())
            .bearer_auth(token)
            .header(STRIPE_VERSION_HEADER, STRIPE_VERSION)
            .header(ACCEPT, "application/json")
    };

    let facts = if transaction_ref.starts_with("ch_") {
        let url = object_url(api_base, "charges", transaction_ref)?;
        let charge: Charge = client
            .send_json(ProviderKind::Stripe, CHARGES_GET_ENDPOINT, || request(&url))
            .await?;
        charge_facts(&charge).map_err(|e| ApiError::permanent(format!("charges.get: {e}")))?
    } else if transaction_ref.starts_with("pi_") {
        let url = object_url(api_base, "payment_intents", transaction_ref)?;
        let intent: PaymentIntent = client
            .send_json(ProviderKind::Stripe, PAYMENT_INTENTS_GET_ENDPOINT, || {
                request(&url)
            })
            .await?;
        intent_facts(&intent)?
    } else {
        return Err(ApiError::permanent(
            "stripe id is neither a charge nor a payment intent",
        ));
    };
    truth(facts, transaction_ref)
}

/// Checks that Stripe answers `GET /v1/balance` with the secret key.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    let token = integration
        .api_token
        .as_deref()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ProbeFailure::misconfigured("stripe integration has no api_token"))?;
    let url = api_url(
        ProviderKind::Stripe,
        integration.api_base(),
        &["v1", "balance"],
    )?;
    let request = client
        .http_for(integration)?
        .get(url)
        .bearer_auth(token)
        .header(STRIPE_VERSION_HEADER, STRIPE_VERSION)
        .header(ACCEPT, "application/json");
    let response = send_once(ProviderKind::Stripe, BALANCE_GET_ENDPOINT, request).await?;
    expect_status(&response, &[StatusCode::OK])
}

/// A payment intent's facts under its own id: it is looked up by that id
/// only when its events named no charge.
fn intent_facts(intent: &PaymentIntent) -> Result<Facts, ApiError> {
    let mut facts = payment_intent_facts(intent)
        .map_err(|e| ApiError::permanent(format!("payment_intents.get: {e}")))?;
    facts.transaction_ref = intent.id.clone();
    Ok(facts)
}

fn truth(facts: Facts, transaction_ref: &str) -> Result<ProviderTruth, ApiError> {
    if facts.transaction_ref != transaction_ref {
        return Err(ApiError::permanent("stripe answered about another object"));
    }
    Ok(ProviderTruth {
        transaction_ref: facts.transaction_ref,
        amount_minor: facts.amount_minor,
        currency: facts.currency,
        state: facts.state,
        occurred_at: facts.occurred_at,
        source_version: Utc::now().timestamp_millis(),
        location_ref: None,
        line_items: Vec::new(),
    })
}

/// `{api_base}/v1/{collection}/{id}`, with the id percent-encoded as one
/// path segment so an id can never reach another endpoint.
fn object_url(api_base: &str, collection: &str, id: &str) -> Result<Url, ApiError> {
    api_url(ProviderKind::Stripe, api_base, &["v1", collection, id])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_object_url_encodes_the_id_as_one_segment() {
        let url = object_url("http://127.0.0.1:8090/stripe", "charges", "ch_1").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8090/stripe/v1/charges/ch_1");
        let url = object_url("https://api.stripe.com/", "charges", "ch_/../../v1/x?y").unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.stripe.com/v1/charges/ch_%2F..%2F..%2Fv1%2Fx%3Fy"
        );
        assert!(object_url("not a url", "charges", "ch_1").is_err());
    }

    #[test]
    fn stripe_payment_intent_truth_keeps_the_intent_id() {
        let intent: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","amount":500,"currency":"sek","status":"succeeded","created":1772442900,
                "latest_charge":"ch_1"}"#,
        )
        .unwrap();
        let truth = truth(intent_facts(&intent).unwrap(), "pi_1").unwrap();
        assert_eq!(truth.transaction_ref, "pi_1");
        assert_eq!(truth.amount_minor, 500);
    }

    #[test]
    fn stripe_answer_about_another_charge_is_permanent() {
        let charge: Charge = serde_json::from_str(
            r#"{"id":"ch_other","amount":500,"currency":"sek","status":"succeeded","created":1}"#,
        )
        .unwrap();
        let facts = charge_facts(&charge).unwrap();
        assert!(matches!(
            truth(facts, "ch_asked"),
            Err(ApiError::Permanent(_))
        ));
    }
}
