//! The sandbox: kvitto's stand-in for every provider.
//!
//! `kvitto simulate` and the test suite use it to play the providers from
//! an in-memory set of generated purchases: it serves each provider's lookup
//! API (under `/{provider}/...` on the sandbox listener) and sends correctly
//! signed webhooks about those purchases to a running kvitto. Faults can be
//! injected per provider (errors, rate limits, hangs, wrong amounts) so the
//! failure paths are exercised against real HTTP.
//!
//! Each provider also answers kvitto's health probe the way its real API
//! does (see `crate::health`): the sandbox credentials are accepted, any
//! others get 401. Probes are counted apart from lookups, and the injected
//! faults apply to them too (except Zettle's token fetch, which lookups
//! share).
//!
//! The payout APIs (Stripe Connect transfers, payouts and onboarding, Swish
//! payouts) are played too, with their own faults per operation and counts
//! of what was really made: see [`payouts`].
//!
//! Each provider's own part lives in `providers/<name>/sandbox.rs`; this
//! module holds what they share.

pub mod feedback;
pub mod generate;
pub mod payouts;
pub mod send;
pub mod server;
pub mod simulate;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::canonical::{LineItem, PaymentState};
use crate::config::{Config, IntegrationConfig};
use crate::money;
use crate::providers::ProviderKind;

/// One purchase the sandbox plays: what the provider's API answers about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub provider: ProviderKind,
    pub integration_id: String,
    /// The provider's own transaction id, in that provider's format.
    pub transaction_ref: String,
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub state: PaymentState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The provider's location id for the till.
    pub location_ref: String,
    /// Every item has `unit_price_minor` and `total_minor`; totals add up to
    /// `amount_minor`.
    pub line_items: Vec<LineItem>,
}

/// Which webhook about a purchase to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// The first event about the purchase (Square `payment.created`, Stripe
    /// `charge.succeeded`, Shopify `orders/create`, Zettle `PurchaseCreated`,
    /// Swish callback, Klarna push, generic `transaction.created`).
    Created,
    /// A later state of the same purchase (Square `payment.updated`; for
    /// providers without update events, the same as `Created` with a new
    /// event id).
    Updated,
}

/// A webhook ready to send: path (with query) below kvitto's base URL,
/// headers and the exact body bytes that were signed.
#[derive(Debug, Clone)]
pub struct SandboxWebhook {
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The provider event id the webhook carries (the dedup key).
    pub event_id: String,
}

/// A misbehaviour injected into one provider's sandbox API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 Internal Server Error.
    ServerError,
    /// 429 with `Retry-After` in seconds.
    RateLimited { retry_after_secs: u64 },
    /// Answers only after this long (past kvitto's timeout when longer).
    Hang(Duration),
    /// Answers correctly but with the amount raised by this many minor units.
    WrongAmount { delta_minor: i64 },
}

/// What a provider's sandbox route should do for one lookup.
pub enum Lookup {
    Found(Purchase),
    Missing,
    /// Answer this instead (a fault injected for the provider).
    Respond(HttpResponse),
}

/// Shared state of the sandbox server and sender.
pub struct SandboxState {
    pub config: Config,
    purchases: RwLock<HashMap<(ProviderKind, String), Purchase>>,
    lookups: Mutex<HashMap<(ProviderKind, String), u32>>,
    probes: Mutex<HashMap<ProviderKind, u32>>,
    faults: RwLock<HashMap<ProviderKind, Fault>>,
    /// The payout APIs' objects, stored answers, faults and counts.
    pub payouts: payouts::PayoutSandbox,
}

impl SandboxState {
    pub fn new(config: Config) -> Self {
        SandboxState {
            config,
            purchases: RwLock::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
            faults: RwLock::new(HashMap::new()),
            payouts: payouts::PayoutSandbox::default(),
        }
    }

    pub fn insert(&self, purchase: Purchase) {
        let key = (purchase.provider, purchase.transaction_ref.clone());
        self.purchases
            .write()
            .expect("sandbox lock")
            .insert(key, purchase);
    }

    pub fn get(&self, provider: ProviderKind, transaction_ref: &str) -> Option<Purchase> {
        let key = (provider, transaction_ref.to_string());
        self.purchases
            .read()
            .expect("sandbox lock")
            .get(&key)
            .cloned()
    }

    /// Changes a stored purchase in place (a later state, a refund).
    pub fn update(
        &self,
        provider: ProviderKind,
        transaction_ref: &str,
        change: impl FnOnce(&mut Purchase),
    ) {
        let key = (provider, transaction_ref.to_string());
        if let Some(purchase) = self.purchases.write().expect("sandbox lock").get_mut(&key) {
            change(purchase);
        }
    }

    pub fn set_fault(&self, provider: ProviderKind, fault: Option<Fault>) {
        let mut faults = self.faults.write().expect("sandbox lock");
        match fault {
            Some(fault) => faults.insert(provider, fault),
            None => faults.remove(&provider),
        };
    }

    /// How many times kvitto looked a purchase up.
    pub fn lookups_of(&self, provider: ProviderKind, transaction_ref: &str) -> u32 {
        let key = (provider, transaction_ref.to_string());
        self.lookups
            .lock()
            .expect("sandbox lock")
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// How many health probes of `provider` reached the sandbox.
    pub fn probes_of(&self, provider: ProviderKind) -> u32 {
        self.probes
            .lock()
            .expect("sandbox lock")
            .get(&provider)
            .copied()
            .unwrap_or(0)
    }

    /// Records a health probe that presented valid credentials, and applies
    /// the fault injected for the provider: `Some` answer to give instead of
    /// the healthy one.
    pub async fn probe(&self, provider: ProviderKind) -> Option<HttpResponse> {
        *self
            .probes
            .lock()
            .expect("sandbox lock")
            .entry(provider)
            .or_default() += 1;
        let fault = self
            .faults
            .read()
            .expect("sandbox lock")
            .get(&provider)
            .copied();
        match fault? {
            Fault::ServerError => Some(HttpResponse::InternalServerError().finish()),
            Fault::RateLimited { retry_after_secs } => Some(
                HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", retry_after_secs.to_string()))
                    .finish(),
            ),
            Fault::Hang(duration) => {
                tokio::time::sleep(duration).await;
                None
            }
            Fault::WrongAmount { .. } => None,
        }
    }

    /// Purchases that kvitto has looked up at least once.
    pub fn looked_up_count(&self) -> usize {
        self.lookups.lock().expect("sandbox lock").len()
    }

    /// The integration whose API credential is `token`, for routes that
    /// check credentials like the real API does.
    pub fn integration_with_token(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Option<&IntegrationConfig> {
        self.config
            .integrations
            .iter()
            .find(|i| i.provider == provider && i.api_token.as_deref() == Some(token))
    }

    /// The integration whose API credential `request` presents as its
    /// `Authorization: Bearer` token.
    pub(crate) fn integration_with_bearer(
        &self,
        provider: ProviderKind,
        request: &HttpRequest,
    ) -> Option<&IntegrationConfig> {
        bearer_token(request).and_then(|token| self.integration_with_token(provider, token))
    }

    /// Records a lookup and decides the answer: a fault if one is injected
    /// for the provider, else the purchase or its absence.
    pub async fn lookup(&self, provider: ProviderKind, transaction_ref: &str) -> Lookup {
        let key = (provider, transaction_ref.to_string());
        *self
            .lookups
            .lock()
            .expect("sandbox lock")
            .entry(key)
            .or_default() += 1;
        let fault = self
            .faults
            .read()
            .expect("sandbox lock")
            .get(&provider)
            .copied();
        match fault {
            Some(Fault::ServerError) => {
                return Lookup::Respond(HttpResponse::InternalServerError().finish());
            }
            Some(Fault::RateLimited { retry_after_secs }) => {
                return Lookup::Respond(
                    HttpResponse::TooManyRequests()
                        .insert_header(("Retry-After", retry_after_secs.to_string()))
                        .finish(),
                );
            }
            Some(Fault::Hang(duration)) => tokio::time::sleep(duration).await,
            Some(Fault::WrongAmount { .. }) | None => {}
        }
        match self.get(provider, transaction_ref) {
            Some(mut purchase) => {
                if let Some(Fault::WrongAmount { delta_minor }) = fault {
                    purchase.amount_minor += delta_minor;
                }
                Lookup::Found(purchase)
            }
            None => Lookup::Missing,
        }
    }
}

/// The token of the request's `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

/// Minor units as the plain decimal text providers put in their payloads
/// (`14950` SEK is `"149.50"`), in the currency's own exponent. Unlike
/// [`money::format_minor`], an unknown currency gets two decimals, the most
/// common exponent, since the sandbox must still send a plausible amount.
pub(crate) fn decimal_amount(amount_minor: i64, currency: &str) -> String {
    let exponent = money::exponent(currency).unwrap_or(2);
    Decimal::new(amount_minor, exponent).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_amounts_render_in_the_currency_exponent() {
        assert_eq!(decimal_amount(14950, "SEK"), "149.50");
        assert_eq!(decimal_amount(5, "SEK"), "0.05");
        assert_eq!(decimal_amount(-1230, "SEK"), "-12.30");
        assert_eq!(decimal_amount(1500, "JPY"), "1500");
        assert_eq!(decimal_amount(1234, "KWD"), "1.234");
        assert_eq!(decimal_amount(1234, "XXQ"), "12.34");
        assert_eq!(decimal_amount(i64::MIN, "SEK"), "-92233720368547758.08");
    }
}
