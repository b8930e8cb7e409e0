//! Looks a Zettle purchase up on the Purchase API, whose answer is the truth
//! a webhook is verified against.
//!
//! Zettle wants an OAuth access token first: the integration's API key is
//! exchanged with a JWT-bearer assertion grant (`POST /token` on the OAuth
//! host, form-encoded `grant_type`, `client_id`, `assertion`), and the token
//! is cached per integration for its lifetime (7200 s) minus a margin by
//! [`ApiClient::cached_token`]. Then `GET /purchases/v2/{purchaseUUID}`.
//!
//! The health probe is the token fetch itself (uncached): it proves the
//! OAuth host answers and accepts the client id and API key, which is all
//! a lookup needs before it can ask the Purchase API.
//!
//! Known shortcoming: a cached token that Zettle revokes early is not
//! dropped on the 401 it causes; lookups of that integration fail as
//! permanent until the cached token's lifetime runs out.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use crate::config::IntegrationConfig;
use crate::health::ProbeFailure;
use crate::health::probe::{DownReason, expect_status, send_once};
use crate::providers::zettle::decode::{ZettlePurchase, purchase_facts};
use crate::providers::{ApiClient, ApiError, ProviderKind, ProviderTruth};

/// The OAuth grant that trades an API key for an access token.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long a token lives when Zettle's answer does not say.
const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 7200;

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Asks Zettle for the purchase `transaction_ref` (its `purchaseUUID1`).
pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    // A UUID is the only thing that may enter the URL path.
    if uuid::Uuid::try_parse(transaction_ref).is_err() || transaction_ref.len() != 36 {
        return Err(ApiError::permanent(
            "zettle purchase id must be a hyphenated UUID",
        ));
    }
    let token = client
        .cached_token(&integration.id, || fetch_token(client, integration))
        .await?;
    let http = client.http_for(integration)?;
    let url = format!("{}/purchases/v2/{transaction_ref}", integration.api_base());

    let purchase: ZettlePurchase = client
        .send_json(ProviderKind::Zettle, "purchases.get", || {
            http.get(&url).bearer_auth(&token)
        })
        .await?;
    if purchase.purchase_uuid1 != transaction_ref {
        return Err(ApiError::permanent(
            "purchases.get: answer is about another purchase",
        ));
    }
    let facts = purchase_facts(&purchase)
        .map_err(|e| ApiError::permanent(format!("purchases.get: {e}")))?;
    Ok(ProviderTruth {
        transaction_ref: transaction_ref.to_string(),
        amount_minor: facts.amount_minor,
        currency: facts.currency,
        state: facts.state,
        occurred_at: facts.created_at,
        source_version: facts.created_at.timestamp_millis(),
        location_ref: None,
        line_items: facts.line_items,
    })
}

/// OAuth error codes (RFC 6749, section 5.2) that mean the client id or the
/// API key was refused.
const REFUSED_GRANT_ERRORS: &[&str] = &["invalid_grant", "invalid_client", "unauthorized_client"];

#[derive(Deserialize)]
struct OauthError {
    #[serde(default)]
    error: String,
}

/// Checks that the OAuth host grants a token for the integration's client
/// id and API key. The token is not kept.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    let (url, form) = token_request(integration).map_err(ProbeFailure::from)?;
    let request = client
        .http_for(integration)?
        .post(&url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form);
    let response = send_once(ProviderKind::Zettle, "oauth.token", request).await?;
    let status = response.status();
    if status == StatusCode::BAD_REQUEST {
        // OAuth refuses a grant with 400 and says why in the body.
        let error = response
            .json::<OauthError>()
            .await
            .map(|answer| answer.error)
            .unwrap_or_default();
        let reason = if REFUSED_GRANT_ERRORS.contains(&error.as_str()) {
            DownReason::CredentialsRejected
        } else {
            DownReason::UnexpectedStatus
        };
        return Err(ProbeFailure::new(
            reason,
            format!("provider answered {status} ({error})"),
        ));
    }
    expect_status(&response, &[StatusCode::OK])
}

/// The token endpoint's URL and form body for the integration.
fn token_request(integration: &IntegrationConfig) -> Result<(String, String), ApiError> {
    let client_id = integration
        .api_username
        .as_deref()
        .ok_or_else(|| ApiError::permanent("zettle integration has no api_username (client id)"))?;
    let api_key = integration
        .api_token
        .as_deref()
        .ok_or_else(|| ApiError::permanent("zettle integration has no api_token (API key)"))?;
    let base = integration
        .oauth_base_url
        .as_deref()
        .map(|base| base.trim_end_matches('/'))
        .unwrap_or_else(|| integration.api_base());
    let form = form_body(&[
        ("grant_type", JWT_BEARER_GRANT),
        ("client_id", client_id),
        ("assertion", api_key),
    ]);
    Ok((format!("{base}/token"), form))
}

/// Trades the integration's API key for an access token and its lifetime.
async fn fetch_token(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(String, Duration), ApiError> {
    let (url, form) = token_request(integration)?;
    let http = client.http_for(integration)?;

    let answer: TokenAnswer = client
        .send_json(ProviderKind::Zettle, "oauth.token", || {
            http.post(&url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.clone())
        })
        .await?;
    if answer.access_token.is_empty() {
        return Err(ApiError::permanent("oauth.token: empty access token"));
    }
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS));
    Ok((answer.access_token, lifetime))
}

/// `application/x-www-form-urlencoded` text: RFC 3986 unreserved bytes as
/// they are, space as `+`, everything else `%XX` (what Python's `urlencode`
/// writes). reqwest's own `form` feature is not enabled in this build.
pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(byte).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{byte:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zettle_token_form_matches_python_urlencode() {
        let body = form_body(&[
            ("grant_type", JWT_BEARER_GRANT),
            ("client_id", "demo-zettle-client-id"),
            ("assertion", "eyJ0eXAi.a+b/c= å~"),
        ]);
        // python3 -c 'import urllib.parse; print(urllib.parse.urlencode([("grant_type",
        //   "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("client_id", "demo-zettle-client-id"),
        //   ("assertion", "eyJ0eXAi.a+b/c= å~")]))'
        assert_eq!(
            body,
            concat!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                "&client_id=demo-zettle-client-id&assertion=eyJ0eXAi.a%2Bb%2Fc%3D+%C3%A5~"
            )
        );
    }
}
