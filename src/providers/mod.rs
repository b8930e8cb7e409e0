//! The providers kvitto takes webhooks from.
//!
//! Every provider module has the same files, so a reader who knows one knows
//! all of them:
//!
//! - `signature.rs`: checks (and, for the sandbox and `kvitto sign`, makes)
//!   the provider's webhook signature over the raw request bytes;
//! - `decode.rs`: turns an accepted raw delivery into a [`DecodedEvent`], and
//!   extracts at ingress the [`EnvelopeInfo`] that keys the event on the bus;
//! - `api.rs`: looks a transaction up on the provider's own API, whose answer
//!   is the truth kvitto verifies against;
//! - `sandbox.rs`: plays the provider for `kvitto simulate` and the tests:
//!   builds signed webhooks for generated purchases and serves the lookup API.
//!
//! This module only dispatches on [`ProviderKind`]; it holds no provider
//! logic of its own.

pub mod api_client;
pub mod generic;
pub(crate) mod hmac_sig;
pub mod klarna;
pub mod shopify;
pub mod square;
pub mod stripe;
pub mod swish;
pub mod zettle;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use self::api_client::{ApiClient, ApiError};
use crate::canonical::{LineItem, PaymentState};
use crate::config::IntegrationConfig;

/// The providers kvitto speaks to. The string form is the URL segment, the
/// topic suffix and the `provider` metric label.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum ProviderKind {
    Square,
    Stripe,
    Shopify,
    Zettle,
    Swish,
    Klarna,
    Generic,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 7] = [
        ProviderKind::Square,
        ProviderKind::Stripe,
        ProviderKind::Shopify,
        ProviderKind::Zettle,
        ProviderKind::Swish,
        ProviderKind::Klarna,
        ProviderKind::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Square => "square",
            ProviderKind::Stripe => "stripe",
            ProviderKind::Shopify => "shopify",
            ProviderKind::Zettle => "zettle",
            ProviderKind::Swish => "swish",
            ProviderKind::Klarna => "klarna",
            ProviderKind::Generic => "generic",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or(UnknownProvider)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown provider")]
pub struct UnknownProvider;

/// One webhook request as ingress received it, before anything is trusted.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// Header lookup is case-insensitive; values that are not visible ASCII
    /// are reported as absent-but-malformed by the signature checks.
    pub headers: &'a actix_web::http::header::HeaderMap,
    /// The raw body bytes, exactly as received.
    pub body: &'a [u8],
    /// The raw query string, without the leading `?` (Klarna puts the order
    /// id there).
    pub query: &'a str,
}

impl<'a> WebhookRequest<'a> {
    /// A header's value as text; `Err` when present but not visible ASCII.
    pub fn header(&self, name: &str) -> Result<Option<&'a str>, SignatureError> {
        match self.headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(Some)
                .map_err(|_| SignatureError::MalformedHeader("header is not visible ASCII")),
        }
    }

    /// A header the signature scheme cannot do without: `Missing` when
    /// absent, otherwise as [`WebhookRequest::header`].
    pub fn required_header(&self, name: &str) -> Result<&'a str, SignatureError> {
        self.header(name)?.ok_or(SignatureError::Missing)
    }
}

/// Why a webhook's signature was not accepted. Each variant maps to one
/// HTTP status and one `outcome` label in exactly one place (ingress).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature header is absent: 401.
    #[error("signature header missing")]
    Missing,
    /// The header is present but cannot be parsed: 400.
    #[error("signature header malformed: {0}")]
    MalformedHeader(&'static str),
    /// Well-formed, but no configured secret produces it: 401.
    #[error("signature does not match")]
    Mismatch,
    /// The signed timestamp is outside the tolerance: 401.
    #[error("signed timestamp outside tolerance")]
    StaleTimestamp,
    /// The body the scheme signs over could not be read (Zettle signs fields
    /// of the JSON envelope): 400.
    #[error("signed content malformed: {0}")]
    MalformedBody(&'static str),
}

/// What ingress learns from an accepted body: enough to key and identify the
/// event on the bus, nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeInfo {
    /// The provider's own id of this delivery or event (the dedup key).
    pub event_id: String,
    /// The provider's id of the transaction the event is about, used as the
    /// bus key so one transaction's events keep their order. Falls back to
    /// the event id for events about no transaction.
    pub partition_key: String,
}

/// Why a body could not be decoded. At ingress this is a 400; in processing
/// it is permanent and dead-letters the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(reason: impl Into<String>) -> Self {
        DecodeError(reason.into())
    }
}

/// A delivery read back from the bus, as processing sees it.
#[derive(Debug, Clone)]
pub struct RawDelivery<'a> {
    pub body: &'a [u8],
    /// The headers ingress kept (lowercase names), see [`KEPT_HEADERS`].
    pub headers: &'a [(String, String)],
    pub query: &'a str,
}

impl RawDelivery<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Headers ingress keeps on the bus message, lowercase. Signatures are not
/// kept: they were checked at the door and are of no use afterwards.
pub const KEPT_HEADERS: &[&str] = &[
    "x-shopify-topic",
    "x-shopify-webhook-id",
    "x-shopify-event-id",
    "x-shopify-shop-domain",
    "x-shopify-triggered-at",
    "content-type",
];

/// What one provider event says, decoded from its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    pub event_id: String,
    pub event_type: String,
    pub action: EventAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventAction {
    /// The event is about a purchase: verify and store it.
    Purchase(Claim),
    /// The event is valid but kvitto has nothing to do with it (a test
    /// notification, an event type it does not process). Committed and
    /// counted, not dead-lettered.
    Ignore { reason: &'static str },
    /// The event is about one of kvitto's own payouts, transfers or
    /// connected accounts (Stripe Connect): settlement moves on.
    Settlement(crate::settlement::SettlementSignal),
}

/// What the webhook claims about a transaction. Fields the payload does not
/// carry are `None` (Klarna pushes carry only the order id); the provider
/// API fills them in when verification is `api`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claim {
    /// The provider's transaction id (Square payment id, Stripe charge id,
    /// Shopify order id, Zettle purchase UUID, Swish payment request id,
    /// Klarna order id, the generic adapter's `transaction_id`).
    pub transaction_ref: String,
    pub amount_minor: Option<i64>,
    /// ISO 4217, upper case.
    pub currency: Option<String>,
    pub state: Option<PaymentState>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// Orders updates to one transaction: higher is newer. Milliseconds of
    /// the provider's `updated_at` where it has one, else of the event time.
    pub source_version: i64,
    /// The provider's location id where the payload names one.
    pub location_ref: Option<String>,
    pub line_items: Vec<LineItem>,
}

/// What the provider's API says about a transaction: the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderTruth {
    pub transaction_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub state: PaymentState,
    pub occurred_at: DateTime<Utc>,
    /// Same ordering as [`Claim::source_version`].
    pub source_version: i64,
    pub location_ref: Option<String>,
    pub line_items: Vec<LineItem>,
}

/// Checks a webhook's signature with the integration's secrets.
pub fn verify_signature(
    integration: &IntegrationConfig,
    request: &WebhookRequest<'_>,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    match integration.provider {
        ProviderKind::Square => square::signature::verify(integration, request),
        ProviderKind::Stripe => stripe::signature::verify(integration, request, now),
        ProviderKind::Shopify => shopify::signature::verify(integration, request),
        ProviderKind::Zettle => zettle::signature::verify(integration, request),
        // Swish and Klarna sign nothing: the unguessable integration path is
        // the only gate, and the provider API is asked before anything is
        // trusted.
        ProviderKind::Swish | ProviderKind::Klarna => Ok(()),
        ProviderKind::Generic => generic::signature::verify(integration, request, now),
    }
}

/// Extracts the event id and bus key from an accepted body.
pub fn envelope_info(
    provider: ProviderKind,
    request: &WebhookRequest<'_>,
) -> Result<EnvelopeInfo, DecodeError> {
    match provider {
        ProviderKind::Square => square::decode::envelope_info(request),
        ProviderKind::Stripe => stripe::decode::envelope_info(request),
        ProviderKind::Shopify => shopify::decode::envelope_info(request),
        ProviderKind::Zettle => zettle::decode::envelope_info(request),
        ProviderKind::Swish => swish::decode::envelope_info(request),
        ProviderKind::Klarna => klarna::decode::envelope_info(request),
        ProviderKind::Generic => generic::decode::envelope_info(request),
    }
}

/// Decodes a delivery read back from the bus.
pub fn decode(
    provider: ProviderKind,
    delivery: &RawDelivery<'_>,
) -> Result<DecodedEvent, DecodeError> {
    match provider {
        ProviderKind::Square => square::decode::decode(delivery),
        ProviderKind::Stripe => stripe::decode::decode(delivery),
        ProviderKind::Shopify => shopify::decode::decode(delivery),
        ProviderKind::Zettle => zettle::decode::decode(delivery),
        ProviderKind::Swish => swish::decode::decode(delivery),
        ProviderKind::Klarna => klarna::decode::decode(delivery),
        ProviderKind::Generic => generic::decode::decode(delivery),
    }
}

/// Asks the provider's API for the truth about one transaction.
pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    match integration.provider {
        ProviderKind::Square => square::api::lookup(client, integration, transaction_ref).await,
        ProviderKind::Stripe => stripe::api::lookup(client, integration, transaction_ref).await,
        ProviderKind::Shopify => shopify::api::lookup(client, integration, transaction_ref).await,
        ProviderKind::Zettle => zettle::api::lookup(client, integration, transaction_ref).await,
        ProviderKind::Swish => swish::api::lookup(client, integration, transaction_ref).await,
        ProviderKind::Klarna => klarna::api::lookup(client, integration, transaction_ref).await,
        ProviderKind::Generic => generic::api::lookup(client, integration, transaction_ref).await,
    }
}
