//! The Swish payouts rail: a reward is paid from the merchant's Swish
//! number to the customer's, over mutual TLS with a signed payload.
//!
//! `POST {base}/api/v1/payouts/` takes `{payload, callbackUrl, signature}`;
//! `signature` is the base64 RSA PKCS#1 v1.5 SHA-512 signature over the
//! SHA-512 hash of the payload's exact JSON bytes, so the payload is hashed
//! twice (Swish "Payouts API" and Merchant Swish Simulator guide, "How to
//! create the payload signature"). Swish answers 201 with a `Location`;
//! `GET {base}/api/v1/payouts/{payoutInstructionUUID}` gives the status
//! (`CREATED`, `DEBITED`, `PAID`, `ERROR`, `CANCELLED`).
//!
//! Guarantee: the `payoutInstructionUUID` is the settlement id, so a retry
//! can only ever meet the first payout. Swish refuses a reused instruction
//! UUID (error `RP09`, "the given instructionUUID is not available", from
//! Swish's error code list for payment requests; that payouts answer it the
//! same way, and with 409, is unverified, so both are handled), and the rail
//! then answers with the first payout's status. The payload bytes are built
//! once and signed and sent as they are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use reqwest::{Response, StatusCode};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha512};
use uuid::Uuid;

use super::{PayoutOrder, PayoutStatus, RailError};
use crate::providers::ProviderKind;
use crate::settlement::Destination;
use crate::settlement::config::SwishRailConfig;
use crate::telemetry::{ProviderApiCall, emit};

/// Swish's payout `message` holds at most this many characters.
pub const MAX_MESSAGE_CHARS: usize = 50;

/// The error code of a reused instruction UUID (see the module docs).
pub const DUPLICATE_INSTRUCTION_CODE: &str = "RP09";

/// A personal identity number is 12 digits (`YYYYMMDDNNNN`).
const SSN_DIGITS: usize = 12;
/// Swish numbers are 8 to 15 digits.
const ALIAS_MIN_DIGITS: usize = 8;
const ALIAS_MAX_DIGITS: usize = 15;

const PAYOUTS_CREATE_ENDPOINT: &str = "payouts.create";
const PAYOUTS_GET_ENDPOINT: &str = "payouts.get";

#[derive(Clone)]
pub struct SwishRail {
    http: reqwest::Client,
    /// `api_base_url` without a trailing slash.
    api_base: String,
    payer_alias: String,
    signing_key: Arc<SigningKey<Sha512>>,
    signing_certificate_serial: String,
    callback_url: String,
}

/// The signed payload, in the field order of Swish's examples.
#[derive(Debug, Serialize)]
struct PayoutPayload<'a> {
    #[serde(rename = "payoutInstructionUUID")]
    payout_instruction_uuid: String,
    #[serde(rename = "payerPaymentReference")]
    payer_payment_reference: String,
    #[serde(rename = "payerAlias")]
    payer_alias: &'a str,
    #[serde(rename = "payeeAlias")]
    payee_alias: &'a str,
    #[serde(rename = "payeeSSN")]
    payee_ssn: &'a str,
    amount: String,
    currency: &'static str,
    #[serde(rename = "payoutType")]
    payout_type: &'static str,
    message: String,
    #[serde(rename = "instructionDate")]
    instruction_date: String,
    #[serde(rename = "signingCertificateSerialNumber")]
    signing_certificate_serial_number: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PayoutRequest<'a> {
    payload: &'a RawValue,
    callback_url: &'a str,
    signature: String,
}

/// A payout as `GET .../payouts/{id}` answers it, as far as kvitto reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayoutAnswer {
    status: String,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

/// One entry of Swish's error array.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SwishError {
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// What a payout request's answer means.
#[derive(Debug, PartialEq, Eq)]
enum Created {
    Accepted,
    /// The instruction UUID was used before: the first payout stands.
    Duplicate,
}

/// The instruction UUID of a settlement: 32 upper-case hex digits.
pub fn instruction_uuid(settlement_id: Uuid) -> String {
    settlement_id.simple().to_string().to_ascii_uppercase()
}

/// Öre as Swish's amount text, `1250` → `"12.50"`, without a float.
pub fn amount_text(amount_minor: i64) -> Result<String, RailError> {
    if amount_minor <= 0 {
        return Err(RailError::Refused(format!(
            "swish payout amount must be positive, got {amount_minor}"
        )));
    }
    Ok(format!("{}.{:02}", amount_minor / 100, amount_minor % 100))
}

fn is_digits(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// The destination's Swish number and identity number, checked for shape.
fn payee(order: &PayoutOrder) -> Result<(&str, &str), RailError> {
    let Destination::Swish { number, ssn } = &order.destination else {
        return Err(RailError::Refused(
            "a stripe destination on the swish rail".into(),
        ));
    };
    if !is_digits(number, ALIAS_MIN_DIGITS, ALIAS_MAX_DIGITS) {
        return Err(RailError::Refused(
            "swish payee number is not 8-15 digits".into(),
        ));
    }
    if !is_digits(ssn, SSN_DIGITS, SSN_DIGITS) {
        return Err(RailError::Refused(
            "swish payee ssn is not 12 digits".into(),
        ));
    }
    Ok((number, ssn))
}

/// Reads the signing key as PKCS#8, then as PKCS#1 PEM.
fn read_signing_key(config: &SwishRailConfig) -> Result<SigningKey<Sha512>, RailError> {
    let path = &config.signing_key_file;
    let pem = std::fs::read_to_string(path).map_err(|e| {
        RailError::Config(format!(
            "settlement.swish.signing_key_file {}: {e}",
            path.display()
        ))
    })?;
    let key = RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|_| {
            RailError::Config(format!(
                "settlement.swish.signing_key_file {} is not an RSA PKCS#8 or PKCS#1 PEM key",
                path.display()
            ))
        })?;
    Ok(SigningKey::<Sha512>::new(key))
}

/// The client certificate and key for mutual TLS, when configured.
fn read_identity(config: &SwishRailConfig) -> Result<Option<reqwest::Identity>, RailError> {
    let (cert, key) = match (&config.client_cert_file, &config.client_key_file) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(RailError::Config(
                "settlement.swish needs both client_cert_file and client_key_file".into(),
            ));
        }
    };
    let read = |path: &std::path::Path, key: &str| {
        std::fs::read(path).map_err(|e| {
            RailError::Config(format!("settlement.swish.{key} {}: {e}", path.display()))
        })
    };
    let mut pem = read(cert, "client_cert_file")?;
    pem.push(b'\n');
    pem.extend(read(key, "client_key_file")?);
    reqwest::Identity::from_pem(&pem)
        .map(Some)
        .map_err(|e| RailError::Config(format!("settlement.swish client certificate: {e}")))
}

impl SwishRail {
    pub fn try_new(config: &SwishRailConfig, timeout: Duration) -> Result<Self, RailError> {
        // Swish refuses a callback URL that is not HTTPS (error RP03); plain
        // HTTP is let through only to this machine, for the sandbox.
        let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
            .iter()
            .any(|prefix| config.callback_url.starts_with(prefix));
        if !config.callback_url.starts_with("https://") && !loopback {
            return Err(RailError::Config(
                "settlement.swish.callback_url must be an https:// URL".into(),
            ));
        }
        let signing_key = read_signing_key(config)?;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("kvitto/", env!("CARGO_PKG_VERSION")));
        if let Some(identity) = read_identity(config)? {
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| RailError::Config(format!("building swish http client: {e}")))?;
        Ok(SwishRail {
            http,
            api_base: config.api_base_url.trim_end_matches('/').to_string(),
            payer_alias: config.payer_alias.clone(),
            signing_key: Arc::new(signing_key),
            signing_certificate_serial: config.signing_certificate_serial.clone(),
            callback_url: config.callback_url.clone(),
        })
    }

    /// Requests the payout; a reused instruction UUID answers with the
    /// first payout's status.
    pub async fn submit(&self, order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        let uuid = instruction_uuid(order.settlement_id);
        match self.create(order, &uuid).await? {
            Created::Accepted => Ok(PayoutStatus::InFlight { provider_ref: uuid }),
            Created::Duplicate => self.lookup(&uuid).await?.ok_or_else(|| {
                RailError::Transient("swish called the payout a duplicate but has none".into())
            }),
        }
    }

    /// The payout's status; one Swish does not know is requested again.
    pub async fn status(&self, order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        let uuid = instruction_uuid(order.settlement_id);
        match self.lookup(&uuid).await? {
            Some(status) => Ok(status),
            None => self.submit(order).await,
        }
    }

    async fn create(&self, order: &PayoutOrder, uuid: &str) -> Result<Created, RailError> {
        let body = self.request_body(order, uuid)?;
        let url = format!("{}/api/v1/payouts/", self.api_base);
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = send(PAYOUTS_CREATE_ENDPOINT, request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Created::Accepted);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let errors: Vec<SwishError> = serde_json::from_slice(&bytes).unwrap_or_default();
        classify_refusal(status, &errors)
    }

    /// The signed request body. The payload is serialised once; the same
    /// bytes are hashed, signed and embedded.
    fn request_body(&self, order: &PayoutOrder, uuid: &str) -> Result<Vec<u8>, RailError> {
        let payload = self.payload_bytes(order, uuid)?;
        let signature = self.sign(payload.as_bytes());
        let raw = RawValue::from_string(payload)
            .map_err(|e| RailError::Config(format!("swish payload: {e}")))?;
        let request = PayoutRequest {
            payload: &raw,
            callback_url: &self.callback_url,
            signature,
        };
        serde_json::to_vec(&request).map_err(|e| RailError::Config(format!("swish request: {e}")))
    }

    fn payload_bytes(&self, order: &PayoutOrder, uuid: &str) -> Result<String, RailError> {
        if order.currency != "SEK" {
            return Err(RailError::Refused(format!(
                "swish pays out SEK only, not {}",
                order.currency
            )));
        }
        let (payee_alias, payee_ssn) = payee(order)?;
        let payload = PayoutPayload {
            payout_instruction_uuid: uuid.to_string(),
            payer_payment_reference: order.settlement_id.simple().to_string(),
            payer_alias: &self.payer_alias,
            payee_alias,
            payee_ssn,
            amount: amount_text(order.amount_minor)?,
            currency: "SEK",
            payout_type: "PAYOUT",
            message: order.message.chars().take(MAX_MESSAGE_CHARS).collect(),
            instruction_date: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            signing_certificate_serial_number: &self.signing_certificate_serial,
        };
        serde_json::to_string(&payload)
            .map_err(|e| RailError::Config(format!("swish payload: {e}")))
    }

    /// base64(RSA-PKCS#1v1.5-SHA512(SHA512(payload))).
    fn sign(&self, payload: &[u8]) -> String {
        let digest = Sha512::digest(payload);
        let signature = self.signing_key.sign(&digest);
        BASE64.encode(signature.to_bytes())
    }

    /// The payout's status, or `None` when Swish has no such payout.
    async fn lookup(&self, uuid: &str) -> Result<Option<PayoutStatus>, RailError> {
        let url = format!("{}/api/v1/payouts/{uuid}", self.api_base);
        let response = send(PAYOUTS_GET_ENDPOINT, self.http.get(url)).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = response.bytes().await.map_err(|e| {
            RailError::Transient(format!("{PAYOUTS_GET_ENDPOINT}: reading answer: {e}"))
        })?;
        if !status.is_success() {
            let errors: Vec<SwishError> = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(classify_error(status, &errors));
        }
        let answer: PayoutAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            RailError::Transient(format!("{PAYOUTS_GET_ENDPOINT}: unexpected answer: {e}"))
        })?;
        payout_status(uuid, &answer).map(Some)
    }
}

/// What a payout's `status` means for kvitto.
fn payout_status(uuid: &str, answer: &PayoutAnswer) -> Result<PayoutStatus, RailError> {
    let provider_ref = uuid.to_string();
    match answer.status.as_str() {
        "CREATED" | "DEBITED" => Ok(PayoutStatus::InFlight { provider_ref }),
        "PAID" => Ok(PayoutStatus::Paid { provider_ref }),
        "ERROR" | "CANCELLED" => {
            let code = answer.error_code.as_deref().unwrap_or(&answer.status);
            let reason = match answer.error_message.as_deref() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_string(),
            };
            Ok(PayoutStatus::Failed {
                provider_ref: Some(provider_ref),
                reason,
            })
        }
        other => Err(RailError::Transient(format!(
            "unknown swish payout status {other:?}"
        ))),
    }
}

/// A payout request's non-2xx answer: a duplicate, or an error.
fn classify_refusal(status: StatusCode, errors: &[SwishError]) -> Result<Created, RailError> {
    let duplicate = errors
        .iter()
        .any(|e| e.error_code.as_deref() == Some(DUPLICATE_INSTRUCTION_CODE));
    if status == StatusCode::CONFLICT || duplicate {
        return Ok(Created::Duplicate);
    }
    Err(classify_error(status, errors))
}

/// Retry-later for 5xx, 429 and 408; an operator's problem for refused
/// credentials (the client certificate); final for the rest.
pub(crate) fn classify_error(status: StatusCode, errors: &[SwishError]) -> RailError {
    let codes: Vec<String> = errors
        .iter()
        .map(|e| {
            let code = e.error_code.as_deref().unwrap_or("unknown");
            match e.error_message.as_deref() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_string(),
            }
        })
        .collect();
    let text = format!("swish answered {status}: {}", codes.join("; "));
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => RailError::Transient(text),
        status if status.is_server_error() => RailError::Transient(text),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RailError::Config(text),
        _ => RailError::Refused(text),
    }
}

/// Sends once; retrying is the engine's business, with the same UUID.
async fn send(
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Response, RailError> {
    let started = Instant::now();
    let result = request.send().await;
    emit(ProviderApiCall {
        provider: ProviderKind::Swish,
        endpoint,
        status: result.as_ref().ok().map(Response::status),
        elapsed: started.elapsed(),
    });
    result.map_err(|e| {
        let what = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "connection failed".to_string()
        } else {
            format!("request failed: {e}")
        };
        RailError::Transient(format!("{endpoint}: {what}"))
    })
}

#[cfg(test)]
#[path = "swish_tests.rs"]
mod tests;
