//! What a probe can find, and the one-shot HTTP call every provider's probe
//! makes through.
//!
//! A probe is one request with no retries: a check reports what the
//! provider answered just now. It is counted like every provider API call
//! (`kvitto_provider_api_requests_total`, under a probe endpoint label).

use std::error::Error as _;
use std::time::Instant;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Serialize;

use crate::providers::{ApiError, ProviderKind};
use crate::telemetry::{ProviderApiCall, emit};

/// Why an integration is down. The string form is what `/readyz` and
/// `kvitto doctor` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownReason {
    /// No connection: refused, name not resolved, TLS handshake failed.
    Unreachable,
    /// Connected, or trying to, but no answer within the API timeout.
    Timeout,
    /// The provider refused the credentials (401 or 403, or an OAuth grant
    /// refused).
    CredentialsRejected,
    /// Any other answer than the one a healthy API gives.
    UnexpectedStatus,
    /// kvitto cannot even ask: no credentials configured, an unreadable
    /// client certificate, an unusable `api_base_url`.
    Misconfigured,
}

impl DownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DownReason::Unreachable => "unreachable",
            DownReason::Timeout => "timeout",
            DownReason::CredentialsRejected => "credentials_rejected",
            DownReason::UnexpectedStatus => "unexpected_status",
            DownReason::Misconfigured => "misconfigured",
        }
    }
}

/// A failed probe: the reason category and a detail for people. The detail
/// holds status codes and transport errors only, never a URL or header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct ProbeFailure {
    pub reason: DownReason,
    pub detail: String,
}

impl ProbeFailure {
    pub fn new(reason: DownReason, detail: impl Into<String>) -> Self {
        ProbeFailure {
            reason,
            detail: detail.into(),
        }
    }

    pub fn misconfigured(detail: impl Into<String>) -> Self {
        ProbeFailure::new(DownReason::Misconfigured, detail)
    }
}

/// Errors from building the request (a missing certificate file, an
/// unusable base URL) mean kvitto is misconfigured, not the provider down.
impl From<ApiError> for ProbeFailure {
    fn from(error: ApiError) -> Self {
        ProbeFailure::misconfigured(error.to_string())
    }
}

/// Sends `request` once and returns the answer, whatever its status.
pub(crate) async fn send_once(
    provider: ProviderKind,
    endpoint: &'static str,
    request: RequestBuilder,
) -> Result<Response, ProbeFailure> {
    let started = Instant::now();
    let result = request.send().await;
    emit(ProviderApiCall {
        provider,
        endpoint,
        status: result.as_ref().ok().map(Response::status),
        elapsed: started.elapsed(),
    });
    result.map_err(|error| transport_failure(&error))
}

/// Up when the answer's status is one of `healthy`; otherwise the reason.
pub(crate) fn expect_status(
    response: &Response,
    healthy: &[StatusCode],
) -> Result<(), ProbeFailure> {
    classify_status(response.status(), healthy)
}

/// The reason behind an answer, given the statuses a healthy API gives.
pub fn classify_status(status: StatusCode, healthy: &[StatusCode]) -> Result<(), ProbeFailure> {
    if healthy.contains(&status) {
        return Ok(());
    }
    let reason = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DownReason::CredentialsRejected,
        _ => DownReason::UnexpectedStatus,
    };
    Err(ProbeFailure::new(
        reason,
        format!("provider answered {status}"),
    ))
}

/// Sorts a failed request into timeout or unreachable. The detail is the
/// innermost cause (`Connection refused (os error 111)`): reqwest's own
/// text names the URL, which may carry credentials.
pub fn transport_failure(error: &reqwest::Error) -> ProbeFailure {
    if error.is_timeout() {
        return ProbeFailure::new(DownReason::Timeout, "no answer within the api timeout");
    }
    let mut innermost = None;
    let mut cause = error.source();
    while let Some(source) = cause {
        innermost = Some(source);
        cause = source.source();
    }
    let detail = match innermost {
        Some(cause) => format!("connection failed: {cause}"),
        None => "request failed".to_string(),
    };
    ProbeFailure::new(DownReason::Unreachable, detail)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    const OK: &[StatusCode] = &[StatusCode::OK];

    #[test]
    fn healthy_status_is_up() {
        assert_eq!(classify_status(StatusCode::OK, OK), Ok(()));
        let not_found_is_healthy = &[StatusCode::OK, StatusCode::NOT_FOUND];
        assert_eq!(
            classify_status(StatusCode::NOT_FOUND, not_found_is_healthy),
            Ok(())
        );
    }

    #[test]
    fn unauthorized_and_forbidden_are_rejected_credentials() {
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            let failure = classify_status(status, OK).unwrap_err();
            assert_eq!(failure.reason, DownReason::CredentialsRejected, "{status}");
            assert!(failure.detail.contains(status.as_str()), "{failure}");
        }
    }

    #[test]
    fn other_unhealthy_statuses_are_unexpected() {
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::MOVED_PERMANENTLY,
            StatusCode::NO_CONTENT,
        ] {
            let failure = classify_status(status, OK).unwrap_err();
            assert_eq!(failure.reason, DownReason::UnexpectedStatus, "{status}");
        }
    }

    #[test]
    fn failure_reads_reason_then_detail() {
        let failure = classify_status(StatusCode::UNAUTHORIZED, OK).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "credentials_rejected: provider answered 401 Unauthorized"
        );
    }

    #[tokio::test]
    async fn closed_port_is_unreachable_without_naming_the_url() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://user:hunter2@127.0.0.1:{port}/v2/locations");
        let error = reqwest::get(&url).await.unwrap_err();
        let failure = transport_failure(&error);
        assert_eq!(failure.reason, DownReason::Unreachable, "{failure}");
        assert!(!failure.detail.contains("hunter2"), "{failure}");
        assert!(!failure.detail.contains("/v2/locations"), "{failure}");
    }

    #[tokio::test]
    async fn silent_server_is_a_timeout() {
        // Accepts the connection (the kernel does, from the backlog) and
        // never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let error = client
            .get(format!("http://{address}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(transport_failure(&error).reason, DownReason::Timeout);
        drop(listener);
    }
}
