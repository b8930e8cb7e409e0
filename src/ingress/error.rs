//! The one place where ingress failures become HTTP answers.
//!
//! Bodies are short JSON (`{"error": CODE, "message": TEXT}`) and never echo
//! the request, a secret or an internal error's text.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::telemetry::IngressOutcome;

/// Seconds a provider is asked to wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("unknown provider or integration")]
    UnknownIntegration,
    #[error("signature missing")]
    MissingSignature,
    #[error("signature invalid")]
    InvalidSignature,
    #[error("signed timestamp outside tolerance")]
    StaleTimestamp,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("body larger than {max_body_bytes} bytes")]
    TooLarge { max_body_bytes: usize },
    #[error("event could not be stored durably; retry later")]
    Unavailable,
    #[error("too many webhooks in flight; retry later")]
    Overloaded,
    #[error("request body not received in time")]
    Timeout,
}

impl IngressError {
    pub fn outcome(&self) -> IngressOutcome {
        match self {
            IngressError::UnknownIntegration => IngressOutcome::UnknownIntegration,
            IngressError::MissingSignature | IngressError::InvalidSignature => {
                IngressOutcome::InvalidSignature
            }
            IngressError::StaleTimestamp => IngressOutcome::StaleTimestamp,
            IngressError::Malformed(_) => IngressOutcome::Malformed,
            IngressError::TooLarge { .. } => IngressOutcome::TooLarge,
            IngressError::Unavailable => IngressOutcome::Unavailable,
            IngressError::Overloaded => IngressOutcome::Overloaded,
            IngressError::Timeout => IngressOutcome::Timeout,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IngressError::UnknownIntegration => "unknown_integration",
            IngressError::MissingSignature => "missing_signature",
            IngressError::InvalidSignature => "invalid_signature",
            IngressError::StaleTimestamp => "stale_timestamp",
            IngressError::Malformed(_) => "malformed",
            IngressError::TooLarge { .. } => "too_large",
            IngressError::Unavailable => "unavailable",
            IngressError::Overloaded => "overloaded",
            IngressError::Timeout => "timeout",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ResponseError for IngressError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngressError::UnknownIntegration => StatusCode::NOT_FOUND,
            IngressError::MissingSignature
            | IngressError::InvalidSignature
            | IngressError::StaleTimestamp => StatusCode::UNAUTHORIZED,
            IngressError::Malformed(_) => StatusCode::BAD_REQUEST,
            IngressError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Unavailable | IngressError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, IngressError::Unavailable | IngressError::Overloaded) {
            response.insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()));
        }
        // Malformed messages come from decode errors: they describe the
        // body's shape and may quote a fragment of the sender's own body
        // (serde's "invalid type: string \"1\""), never a secret or
        // anything of kvitto's.
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}
