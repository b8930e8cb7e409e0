//! The Stripe Connect rail: a reward is transferred from the platform to the
//! customer's connected account, then paid out from that account to its
//! bank; businesses are onboarded as Express accounts.
//!
//! Stripe's API takes form-encoded bodies with the secret key as a bearer
//! token (Stripe API reference, "Authentication", "Create a transfer",
//! "Create a payout", "Retrieve a payout", "Create an account", "Create an
//! account link"). Calls on a connected account carry its id in
//! `Stripe-Account` ("Making API calls for connected accounts").
//!
//! Guarantee: both writes of a payout carry an `Idempotency-Key` derived
//! from the settlement id alone (`kvitto-<id>-transfer`, `kvitto-<id>-payout`).
//! Stripe stores the first answer to a key and replays it for a retry with
//! the same parameters (Stripe docs, "Idempotent requests"), so a retry after
//! a timeout or a lost answer finds the first transfer and payout instead of
//! making new ones. A payout refused after its transfer went through has the
//! transfer reversed (under its own key) before the refusal is reported, so
//! a refused settlement leaves no money on the customer's account. Errors
//! never carry the secret key.

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{OnboardingRequest, PayoutOrder, PayoutStatus, RailError};
use crate::providers::ProviderKind;
use crate::providers::stripe::api::STRIPE_VERSION;
use crate::settlement::Destination;
use crate::settlement::config::StripeRailConfig;
use crate::telemetry::{ProviderApiCall, emit};

const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
const STRIPE_ACCOUNT_HEADER: &str = "Stripe-Account";
const STRIPE_VERSION_HEADER: &str = "Stripe-Version";

/// Longest statement descriptor Stripe takes on a payout ("Create a
/// payout", `statement_descriptor`).
const MAX_STATEMENT_DESCRIPTOR_CHARS: usize = 22;

/// The `endpoint` metric labels.
const TRANSFERS_CREATE_ENDPOINT: &str = "transfers.create";
const TRANSFERS_LIST_ENDPOINT: &str = "transfers.list";
const PAYOUTS_CREATE_ENDPOINT: &str = "payouts.create";
const TRANSFER_REVERSALS_CREATE_ENDPOINT: &str = "transfer_reversals.create";
const PAYOUTS_GET_ENDPOINT: &str = "payouts.get";
const ACCOUNTS_CREATE_ENDPOINT: &str = "accounts.create";
const ACCOUNT_LINKS_CREATE_ENDPOINT: &str = "account_links.create";

/// Form parameters, in the order they are sent.
type Form = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct StripeRail {
    http: reqwest::Client,
    api_base: Url,
    secret_key: String,
    refresh_url: String,
    return_url: String,
}

/// A Stripe `Payout`, as far as kvitto reads it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Payout {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Deserialize)]
struct ListedTransfer {
    id: String,
    #[serde(default)]
    reversed: bool,
}

#[derive(Debug, Deserialize)]
struct TransferList {
    data: Vec<ListedTransfer>,
}

#[derive(Debug, Deserialize)]
struct AccountLink {
    url: String,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: StripeError,
}

/// Stripe's error object ("Errors"): `type`, `code`, `message`.
#[derive(Debug, Default, Deserialize)]
struct StripeError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// What the rail makes of a payout's `status` ("The Payout object").
pub(crate) fn payout_status(payout: &Payout) -> Result<PayoutStatus, String> {
    let provider_ref = payout.id.clone();
    match payout.status.as_str() {
        "pending" | "in_transit" => Ok(PayoutStatus::InFlight { provider_ref }),
        "paid" => Ok(PayoutStatus::Paid { provider_ref }),
        "failed" | "canceled" => Ok(PayoutStatus::Failed {
            provider_ref: Some(provider_ref),
            reason: failure_reason(payout),
        }),
        other => Err(format!("unknown stripe payout status {other:?}")),
    }
}

fn failure_reason(payout: &Payout) -> String {
    let code = payout.failure_code.as_deref().unwrap_or(&payout.status);
    match payout.failure_message.as_deref() {
        Some(message) => format!("{code}: {message}"),
        None => code.to_string(),
    }
}

/// The idempotency key of one write for a settlement.
fn idempotency_key(order: &PayoutOrder, write: &str) -> String {
    format!("kvitto-{}-{write}", order.settlement_id)
}

/// What Stripe accepts in a statement descriptor: letters, digits and
/// spaces, at most 22 characters; `None` when nothing is left.
fn statement_descriptor(message: &str) -> Option<String> {
    let kept: String = message
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .take(MAX_STATEMENT_DESCRIPTOR_CHARS)
        .collect();
    let kept = kept.trim().to_string();
    (!kept.is_empty()).then_some(kept)
}

impl StripeRail {
    pub fn try_new(config: &StripeRailConfig, timeout: Duration) -> Result<Self, RailError> {
        let api_base = Url::parse(&config.api_base_url)
            .map_err(|e| RailError::Config(format!("settlement.stripe.api_base_url: {e}")))?;
        if config.secret_key.is_empty() {
            return Err(RailError::Config(
                "settlement.stripe.secret_key is empty".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("kvitto/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RailError::Config(format!("building stripe http client: {e}")))?;
        Ok(StripeRail {
            http,
            api_base,
            secret_key: config.secret_key.clone(),
            refresh_url: config.onboarding_refresh_url.clone(),
            return_url: config.onboarding_return_url.clone(),
        })
    }

    /// Transfers the reward to the connected account, then pays it out.
    pub async fn submit(&self, order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        let account = destination_account(order)?;
        if order.amount_minor <= 0 {
            return Err(RailError::Refused(format!(
                "stripe payout amount must be positive, got {}",
                order.amount_minor
            )));
        }
        let transfer_id = self.transfer(order, account).await?;
        let request = self.payout_request(order, account)?;
        match self.send::<Payout>(PAYOUTS_CREATE_ENDPOINT, request).await {
            Ok(payout) => payout_status(&payout).map_err(RailError::Transient),
            Err(RailError::Refused(reason)) => {
                self.reverse(order, &transfer_id).await?;
                Err(RailError::Refused(format!("{reason}; transfer reversed")))
            }
            Err(other) => Err(other),
        }
    }

    /// The payout's state on the connected account when its id is known,
    /// else the replay of the first submission.
    pub async fn status(&self, order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        let account = destination_account(order)?;
        let Some(payout_id) = order
            .provider_ref
            .as_deref()
            .filter(|r| r.starts_with("po_"))
        else {
            return self.submit(order).await;
        };
        let url = self.url(&["v1", "payouts", payout_id])?;
        let request = self
            .authorised(self.http.get(url))
            .header(STRIPE_ACCOUNT_HEADER, account);
        let payout: Payout = self.send(PAYOUTS_GET_ENDPOINT, request).await?;
        payout_status(&payout).map_err(RailError::Transient)
    }

    /// Creates an Express account for a Swedish company; returns its id.
    pub async fn create_account(&self, request: &OnboardingRequest) -> Result<String, RailError> {
        let form: Form = vec![
            ("type", "express".into()),
            ("country", "SE".into()),
            ("business_type", "company".into()),
            ("company[name]", request.company_name.clone()),
            ("company[tax_id]", request.registration_number.clone()),
            ("email", request.email.clone()),
            ("metadata[business_id]", request.business_id.clone()),
            ("capabilities[transfers][requested]", "true".into()),
        ];
        let key = format!("kvitto-onboard-{}", request.business_id);
        let builder = self
            .post(&["v1", "accounts"], &form)?
            .header(IDEMPOTENCY_KEY_HEADER, key);
        let account: Created = self.send(ACCOUNTS_CREATE_ENDPOINT, builder).await?;
        Ok(account.id)
    }

    /// A fresh onboarding link; links expire, so none is reused.
    pub async fn account_link(&self, account_id: &str) -> Result<String, RailError> {
        let form: Form = vec![
            ("account", account_id.to_string()),
            ("refresh_url", self.refresh_url.clone()),
            ("return_url", self.return_url.clone()),
            ("type", "account_onboarding".into()),
        ];
        let builder = self.post(&["v1", "account_links"], &form)?;
        let link: AccountLink = self.send(ACCOUNT_LINKS_CREATE_ENDPOINT, builder).await?;
        Ok(link.url)
    }

    /// Transfers the reward to the connected account; returns the
    /// transfer's id (the first one's, on a retry).
    ///
    /// Stripe keeps an idempotency key's answer for 24 hours or more, not
    /// for ever, and a payout can keep failing for longer than that. So the
    /// transfer is first looked for by its `transfer_group` (the settlement
    /// id), and made only when there is none: the key covers the race of
    /// two tries at once, the lookup covers the key being forgotten.
    async fn transfer(&self, order: &PayoutOrder, account: &str) -> Result<String, RailError> {
        let settlement_id = order.settlement_id.to_string();
        let mut url = self.url(&["v1", "transfers"])?;
        url.query_pairs_mut()
            .append_pair("transfer_group", &settlement_id)
            .append_pair("limit", "3");
        let listed: TransferList = self
            .send(TRANSFERS_LIST_ENDPOINT, self.authorised(self.http.get(url)))
            .await?;
        if let Some(earlier) = listed.data.first() {
            if earlier.reversed {
                return Err(RailError::Refused(format!(
                    "transfer {} of this settlement was reversed already",
                    earlier.id
                )));
            }
            return Ok(earlier.id.clone());
        }
        let form: Form = vec![
            ("amount", order.amount_minor.to_string()),
            ("currency", order.currency.to_ascii_lowercase()),
            ("destination", account.to_string()),
            ("transfer_group", settlement_id.clone()),
            ("metadata[settlement_id]", settlement_id),
        ];
        let builder = self
            .post(&["v1", "transfers"], &form)?
            .header(IDEMPOTENCY_KEY_HEADER, idempotency_key(order, "transfer"));
        let transfer: Created = self.send(TRANSFERS_CREATE_ENDPOINT, builder).await?;
        Ok(transfer.id)
    }

    /// Takes a transfer back when its payout was refused, so a refusal
    /// leaves no money on the connected account ("Create a transfer
    /// reversal"). Its own key makes a retry reverse once.
    async fn reverse(&self, order: &PayoutOrder, transfer_id: &str) -> Result<(), RailError> {
        let form: Form = vec![("metadata[settlement_id]", order.settlement_id.to_string())];
        let builder = self
            .post(&["v1", "transfers", transfer_id, "reversals"], &form)?
            .header(IDEMPOTENCY_KEY_HEADER, idempotency_key(order, "reversal"));
        let reversal: Result<Created, RailError> =
            self.send(TRANSFER_REVERSALS_CREATE_ENDPOINT, builder).await;
        match reversal {
            Ok(_) => Ok(()),
            // Not final: the money is on the connected account until the
            // reversal goes through, so the payout must stay open.
            Err(RailError::Refused(reason)) => Err(RailError::Config(format!(
                "payout refused but its transfer could not be reversed: {reason}"
            ))),
            Err(other) => Err(other),
        }
    }

    fn payout_request(
        &self,
        order: &PayoutOrder,
        account: &str,
    ) -> Result<RequestBuilder, RailError> {
        let mut form: Form = vec![
            ("amount", order.amount_minor.to_string()),
            ("currency", order.currency.to_ascii_lowercase()),
            ("metadata[settlement_id]", order.settlement_id.to_string()),
        ];
        if let Some(descriptor) = statement_descriptor(&order.message) {
            form.push(("statement_descriptor", descriptor));
        }
        Ok(self
            .post(&["v1", "payouts"], &form)?
            .header(STRIPE_ACCOUNT_HEADER, account)
            .header(IDEMPOTENCY_KEY_HEADER, idempotency_key(order, "payout")))
    }

    fn url(&self, segments: &[&str]) -> Result<Url, RailError> {
        if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(RailError::Refused(
                "stripe id is empty or a dot path".into(),
            ));
        }
        let mut url = self.api_base.clone();
        url.path_segments_mut()
            .map_err(|_| RailError::Config("settlement.stripe.api_base_url takes no path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn post(&self, segments: &[&str], form: &Form) -> Result<RequestBuilder, RailError> {
        let url = self.url(segments)?;
        Ok(self.authorised(self.http.post(url)).form(form))
    }

    fn authorised(&self, builder: RequestBuilder) -> RequestBuilder {
        builder
            .bearer_auth(&self.secret_key)
            .header(STRIPE_VERSION_HEADER, STRIPE_VERSION)
    }

    /// Sends once (retrying is the engine's business, with the same keys)
    /// and decodes a 2xx answer.
    async fn send<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        builder: RequestBuilder,
    ) -> Result<T, RailError> {
        let started = Instant::now();
        let result = builder.send().await;
        emit(ProviderApiCall {
            provider: ProviderKind::Stripe,
            endpoint,
            status: result.as_ref().ok().map(Response::status),
            elapsed: started.elapsed(),
        });
        let response = result.map_err(|e| RailError::Transient(describe(endpoint, &e)))?;
        let status = response.status();
        // An unreadable answer leaves open whether Stripe acted: transient.
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RailError::Transient(describe(endpoint, &e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| RailError::Transient(format!("{endpoint}: unexpected answer: {e}")));
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(self.classify(endpoint, status, body.error))
    }

    /// Sorts a refusal into retry-later, operator-must-act and final.
    fn classify(&self, endpoint: &str, status: StatusCode, error: StripeError) -> RailError {
        let code = error
            .code
            .as_deref()
            .or(error.kind.as_deref())
            .unwrap_or("unknown");
        let message = error
            .message
            .unwrap_or_default()
            .replace(&self.secret_key, "[secret key]");
        let text = format!("{endpoint}: {status}: {code}: {message}");
        match status {
            // 409 is a lock on the object (`lock_timeout`) or a concurrent
            // request with the same key: the first one may still succeed.
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                RailError::Transient(text)
            }
            status if status.is_server_error() => RailError::Transient(text),
            // A payout kvitto itself was answered with is missing: the key
            // or the account changed under it. Not final.
            StatusCode::NOT_FOUND if endpoint == PAYOUTS_GET_ENDPOINT => RailError::Config(text),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RailError::Config(text),
            // The same key with other parameters: the settlement changed
            // after a call that may have paid. Never final on its own.
            _ if error.kind.as_deref() == Some("idempotency_error") => RailError::Config(text),
            _ => RailError::Refused(text),
        }
    }
}

fn destination_account(order: &PayoutOrder) -> Result<&str, RailError> {
    match &order.destination {
        Destination::Stripe { account } if account.starts_with("acct_") => Ok(account),
        Destination::Stripe { .. } => Err(RailError::Refused(
            "stripe destination is not an acct_ id".into(),
        )),
        Destination::Swish { .. } => Err(RailError::Refused(
            "a swish destination on the stripe rail".into(),
        )),
    }
}

fn describe(endpoint: &str, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("{endpoint}: timed out")
    } else if error.is_connect() {
        format!("{endpoint}: connection failed")
    } else {
        // reqwest prints the URL, never headers, so the key stays out.
        format!("{endpoint}: request failed: {error}")
    }
}

#[cfg(test)]
#[path = "stripe_tests.rs"]
mod tests;
