//! The HTTP client every provider's `api.rs` calls through.
//!
//! It owns what all provider calls share: a timeout per call, retries with
//! exponential backoff and jitter for transient failures, `429 Retry-After`
//! honoured up to a ceiling, mutual-TLS clients per integration (Swish),
//! cached bearer tokens (Zettle), and one metric per call. A call that still
//! fails transiently is reported as [`ApiError::Transient`], which makes the
//! pipeline retry the whole event later without committing it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::config::{IntegrationConfig, ProcessingConfig};
use crate::providers::ProviderKind;
use crate::telemetry::{ProviderApiCall, ProviderApiRetry, emit};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Worth trying again later: timeouts, connection failures, 5xx, 429.
    #[error("transient provider API failure: {reason}")]
    Transient {
        reason: String,
        /// What the provider asked for in `Retry-After`, if anything.
        retry_after: Option<Duration>,
    },
    /// The provider does not know the transaction.
    #[error("transaction not found at provider")]
    NotFound,
    /// Trying again will not help: credentials refused, a malformed answer,
    /// a misconfigured integration.
    #[error("provider API call failed: {0}")]
    Permanent(String),
}

impl ApiError {
    pub fn transient(reason: impl Into<String>) -> Self {
        ApiError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        ApiError::Permanent(reason.into())
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Transient { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A bearer token and when it stops being usable.
#[derive(Clone)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// `api_base` with `segments` appended, each percent-encoded as one path
/// segment: ids come from untrusted webhooks and must never reach another
/// endpoint. `.` and `..` are not encoded away, so callers refuse them.
pub(crate) fn api_url(
    provider: ProviderKind,
    api_base: &str,
    segments: &[&str],
) -> Result<Url, ApiError> {
    let mut url = Url::parse(api_base)
        .map_err(|e| ApiError::permanent(format!("{provider} api_base_url: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| ApiError::permanent(format!("{provider} api_base_url cannot take a path")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

pub struct ApiClient {
    http: reqwest::Client,
    /// mTLS clients, one per integration that configures a certificate.
    tls_clients: Mutex<HashMap<String, reqwest::Client>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    max_retries: usize,
    min_backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    timeout: Duration,
}

impl ApiClient {
    pub fn try_new(config: &ProcessingConfig) -> Result<Self, ApiError> {
        let timeout = Duration::from_millis(config.api_timeout_ms);
        Ok(ApiClient {
            http: build_http(timeout, None)?,
            tls_clients: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            max_retries: config.api_max_retries,
            min_backoff: Duration::from_millis(config.api_min_backoff_ms),
            max_backoff: Duration::from_millis(config.api_max_backoff_ms),
            max_retry_after: Duration::from_secs(config.api_max_retry_after_secs),
            timeout,
        })
    }

    /// The HTTP client for one integration: its own mutual-TLS client when it
    /// configures a client certificate, the shared one otherwise.
    pub fn http_for(&self, integration: &IntegrationConfig) -> Result<reqwest::Client, ApiError> {
        let (Some(cert), Some(key)) = (&integration.client_cert_file, &integration.client_key_file)
        else {
            return Ok(self.http.clone());
        };
        let mut clients = self.tls_clients.lock().expect("tls client cache poisoned");
        if let Some(client) = clients.get(&integration.id) {
            return Ok(client.clone());
        }
        let mut pem = std::fs::read(cert)
            .map_err(|e| ApiError::permanent(format!("reading client certificate: {e}")))?;
        pem.extend(
            std::fs::read(key)
                .map_err(|e| ApiError::permanent(format!("reading client key: {e}")))?,
        );
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| ApiError::permanent(format!("client certificate: {e}")))?;
        let client = build_http(self.timeout, Some(identity))?;
        clients.insert(integration.id.clone(), client.clone());
        Ok(client)
    }

    /// Sends a request (rebuilt for every attempt by `build`) with retries
    /// and decodes a 2xx JSON answer.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        provider: ProviderKind,
        endpoint: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, ApiError> {
        let response = self.send(provider, endpoint, build).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::transient(format!("reading answer: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::permanent(format!("{endpoint}: unexpected answer: {e}")))
    }

    /// Sends a request with retries and returns the 2xx response.
    pub async fn send(
        &self,
        provider: ProviderKind,
        endpoint: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let attempt = || async { self.attempt(provider, endpoint, build()).await };
        let max_retry_after = self.max_retry_after;
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(self.min_backoff)
                    .with_max_delay(self.max_backoff)
                    .with_max_times(self.max_retries)
                    .with_jitter(),
            )
            .when(|error: &ApiError| {
                error.is_transient() && error.retry_after().is_none_or(|d| d <= max_retry_after)
            })
            .adjust(|error: &ApiError, backoff| error.retry_after().or(backoff))
            .notify(|_, _| emit(ProviderApiRetry { provider, endpoint }))
            .await
    }

    async fn attempt(
        &self,
        provider: ProviderKind,
        endpoint: &'static str,
        request: RequestBuilder,
    ) -> Result<Response, ApiError> {
        let started = Instant::now();
        let result = request.send().await;
        let status = result.as_ref().ok().map(|r| r.status());
        emit(ProviderApiCall {
            provider,
            endpoint,
            status,
            elapsed: started.elapsed(),
        });
        let response = result.map_err(|e| ApiError::transient(describe_reqwest(&e)))?;
        classify(response)
    }

    /// A bearer token from the cache, or a fresh one from `fetch`, which
    /// returns the token and its lifetime. Tokens are refreshed a minute
    /// before they expire.
    pub async fn cached_token<F, Fut>(&self, cache_key: &str, fetch: F) -> Result<String, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), ApiError>>,
    {
        if let Some(cached) = self
            .tokens
            .lock()
            .expect("token cache poisoned")
            .get(cache_key)
            && cached.refresh_at > Instant::now()
        {
            return Ok(cached.token.clone());
        }
        let (token, lifetime) = fetch().await?;
        let refresh_at = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
        self.tokens.lock().expect("token cache poisoned").insert(
            cache_key.to_string(),
            CachedToken {
                token: token.clone(),
                refresh_at,
            },
        );
        Ok(token)
    }
}

fn build_http(
    timeout: Duration,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("kvitto/", env!("CARGO_PKG_VERSION")));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| ApiError::permanent(format!("building HTTP client: {e}")))
}

/// Sorts an answer into success, retry-later, not-found and give-up.
fn classify(response: Response) -> Result<Response, ApiError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    match status {
        StatusCode::NOT_FOUND => Err(ApiError::NotFound),
        StatusCode::TOO_MANY_REQUESTS => Err(ApiError::Transient {
            reason: "rate limited (429)".into(),
            retry_after: retry_after(&response),
        }),
        StatusCode::REQUEST_TIMEOUT => Err(ApiError::transient("request timeout (408)")),
        status if status.is_server_error() => Err(ApiError::Transient {
            reason: format!("status {status}"),
            retry_after: retry_after(&response),
        }),
        status => Err(ApiError::permanent(format!("status {status}"))),
    }
}

/// `Retry-After` in seconds; an HTTP date is not worth the parsing here
/// and falls back to the exponential backoff.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn describe_reqwest(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else {
        // The error's text can carry the URL, never secrets: tokens travel in
        // headers, which reqwest does not print.
        format!("request failed: {error}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use actix_web::{App, HttpResponse, HttpServer, web};

    use super::*;

    /// Answers 429 with `Retry-After: 1` to the first request, then 200, and
    /// remembers when each request came.
    async fn rate_limited_once() -> (String, Arc<std::sync::Mutex<Vec<Instant>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicU32::new(0));
        let (seen_in, calls_in) = (seen.clone(), calls.clone());
        let server = HttpServer::new(move || {
            let (seen, calls) = (seen_in.clone(), calls_in.clone());
            App::new().route(
                "/thing",
                web::get().to(move || {
                    let (seen, calls) = (seen.clone(), calls.clone());
                    async move {
                        seen.lock().unwrap().push(Instant::now());
                        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            HttpResponse::TooManyRequests()
                                .insert_header(("Retry-After", "1"))
                                .finish()
                        } else {
                            HttpResponse::Ok().json(serde_json::json!({"ok": true}))
                        }
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let address = server.addrs()[0];
        actix_rt::spawn(server.run());
        (format!("http://{address}/thing"), seen)
    }

    fn fast_client(max_retry_after_secs: u64) -> ApiClient {
        ApiClient::try_new(&ProcessingConfig {
            api_min_backoff_ms: 1,
            api_max_backoff_ms: 5,
            api_max_retries: 3,
            api_max_retry_after_secs: max_retry_after_secs,
            ..ProcessingConfig::default()
        })
        .unwrap()
    }

    #[actix_rt::test]
    async fn rate_limited_call_waits_for_retry_after_then_succeeds() {
        let (url, seen) = rate_limited_once().await;
        let client = fast_client(60);
        let http = client.http.clone();
        let answer: serde_json::Value = client
            .send_json(ProviderKind::Generic, "thing.get", || http.get(&url))
            .await
            .unwrap();
        assert_eq!(answer["ok"], true);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        // The backoff alone would retry after a few milliseconds; the pause
        // proves the provider's Retry-After was honoured instead.
        assert!(
            seen[1] - seen[0] >= Duration::from_millis(950),
            "{:?}",
            seen[1] - seen[0]
        );
    }

    #[actix_rt::test]
    async fn retry_after_beyond_the_ceiling_fails_the_call_as_transient() {
        let (url, seen) = rate_limited_once().await;
        let client = fast_client(0);
        let http = client.http.clone();
        let result: Result<serde_json::Value, _> = client
            .send_json(ProviderKind::Generic, "thing.get", || http.get(&url))
            .await;
        assert!(
            matches!(
                result,
                Err(ApiError::Transient {
                    retry_after: Some(_),
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "not retried within this attempt"
        );
    }
}
