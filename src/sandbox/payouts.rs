//! What the sandbox's payout APIs (Stripe Connect transfers and payouts,
//! Swish payouts) share: the objects they made, the answers they stored per
//! idempotency key, the faults injected per operation, and whether they send
//! their webhooks and callbacks.
//!
//! Guarantee: every transfer or payout the sandbox makes is counted under the
//! settlement it was made for (Stripe's `transfer_group` or
//! `metadata[settlement_id]`, Swish's `payoutInstructionUUID`), so a test can
//! assert that retries made exactly one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use serde_json::Value;

/// The sandbox-only Swish payout signing key pair (see its README): the
/// private half is what a sandbox `[settlement.swish]` names as
/// `signing_key_file`, the public half is what the sandbox verifies with.
pub const SWISH_SIGNING_KEY_FILE: &str = "config/sandbox/swish-payout-signing-key.pem";
pub const SWISH_SIGNING_PUBLIC_KEY_FILE: &str = "config/sandbox/swish-payout-signing-key.pub.pem";

/// One operation of a sandbox payout API, the unit faults are injected on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayoutOp {
    StripeTransfer,
    StripeTransferList,
    StripeTransferReversal,
    StripePayout,
    StripePayoutGet,
    StripeAccount,
    StripeAccountLink,
    SwishPayout,
    SwishPayoutGet,
}

/// A misbehaviour of one payout operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutFault {
    /// 500 before anything is done.
    ServerError,
    /// 429 with `Retry-After` in seconds, before anything is done.
    RateLimited { retry_after_secs: u64 },
    /// Waits this long, then does the operation and answers normally.
    Hang(Duration),
    /// Does the operation and stores its answer, then answers 500: the call
    /// succeeded but its answer never reached the caller.
    LoseAnswer,
}

/// How long an injected fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSpan {
    /// The next call only.
    Once,
    /// Every call until cleared.
    Always,
}

/// Whether the sandbox sends the webhooks (Stripe) and callbacks (Swish)
/// that follow a payout. Withheld, kvitto only learns outcomes by asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notifications {
    Send,
    Withhold,
}

/// The first answer given under one idempotency key, and what it answered.
#[derive(Debug, Clone)]
pub(crate) struct StoredAnswer {
    /// The endpoint and its sorted parameters: a retry must repeat them.
    pub request: String,
    pub status: StatusCode,
    pub body: Value,
}

/// Where an idempotency key stands when a request presents it.
#[derive(Debug, Clone)]
pub(crate) enum KeyClaim {
    Fresh,
    InProgress,
    Answered(StoredAnswer),
}

/// A notification the sandbox sent (or tried to): where and what.
#[derive(Debug, Clone, PartialEq)]
pub struct SentNotification {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    faults: HashMap<PayoutOp, (PayoutFault, FaultSpan)>,
    /// `None` while the first request under the key is being answered.
    answers: HashMap<String, Option<StoredAnswer>>,
    /// Objects by id (`po_...`, `tr_...`, `acct_...`, Swish instruction UUID).
    objects: HashMap<String, Value>,
    made: HashMap<(PayoutOp, String), u32>,
    notifications: Vec<SentNotification>,
}

/// The sandbox's payout state; one per [`crate::sandbox::SandboxState`].
pub struct PayoutSandbox {
    inner: Mutex<Inner>,
    notifications: Mutex<Notifications>,
    /// What Swish payout signatures are verified with; `None` when the
    /// sandbox key file could not be read, and every payout is refused.
    swish_public_key: Mutex<Option<RsaPublicKey>>,
}

impl Default for PayoutSandbox {
    fn default() -> Self {
        let swish_public_key = std::fs::read_to_string(SWISH_SIGNING_PUBLIC_KEY_FILE)
            .ok()
            .and_then(|pem| RsaPublicKey::from_public_key_pem(&pem).ok());
        PayoutSandbox {
            inner: Mutex::new(Inner::default()),
            notifications: Mutex::new(Notifications::Send),
            swish_public_key: Mutex::new(swish_public_key),
        }
    }
}

impl PayoutSandbox {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("sandbox lock")
    }

    /// Makes `op` misbehave, for its next call or until cleared.
    pub fn inject(&self, op: PayoutOp, fault: PayoutFault, span: FaultSpan) {
        self.inner().faults.insert(op, (fault, span));
    }

    pub fn clear_fault(&self, op: PayoutOp) {
        self.inner().faults.remove(&op);
    }

    /// Verifies Swish payouts with `key` instead of the sandbox key.
    pub fn set_swish_public_key(&self, key: RsaPublicKey) {
        *self.swish_public_key.lock().expect("sandbox lock") = Some(key);
    }

    /// The key Swish payout signatures are checked with, if any.
    pub fn swish_public_key(&self) -> Option<RsaPublicKey> {
        self.swish_public_key.lock().expect("sandbox lock").clone()
    }

    pub fn set_notifications(&self, notifications: Notifications) {
        *self.notifications.lock().expect("sandbox lock") = notifications;
    }

    pub fn notifications(&self) -> Notifications {
        *self.notifications.lock().expect("sandbox lock")
    }

    /// How many times `op` really made something for `key`: the settlement
    /// id for Stripe transfers and payouts, the business id for accounts,
    /// the instruction UUID for Swish payouts.
    pub fn made(&self, op: PayoutOp, key: &str) -> u32 {
        self.inner()
            .made
            .get(&(op, key.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every webhook and callback sent so far, oldest first.
    pub fn sent_notifications(&self) -> Vec<SentNotification> {
        self.inner().notifications.clone()
    }

    /// A stored object (payout, transfer, account) by its id.
    pub fn object(&self, id: &str) -> Option<Value> {
        self.inner().objects.get(id).cloned()
    }

    /// Stored objects for which `keep` holds, by id.
    pub(crate) fn objects_where(&self, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let inner = self.inner();
        let mut found: Vec<(&String, &Value)> =
            inner.objects.iter().filter(|(_, o)| keep(o)).collect();
        found.sort_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, o)| o.clone()).collect()
    }

    /// Forgets every stored idempotent answer, as Stripe does after 24
    /// hours: a request under an old key is then made afresh.
    pub fn expire_idempotency_keys(&self) {
        self.inner().answers.retain(|_, answer| answer.is_none());
    }

    pub(crate) fn put_object(&self, id: &str, object: Value) {
        self.inner().objects.insert(id.to_string(), object);
    }

    pub(crate) fn count_made(&self, op: PayoutOp, key: &str) {
        *self.inner().made.entry((op, key.to_string())).or_default() += 1;
    }

    /// Claims an idempotency key for a request, atomically: the first
    /// request gets `Fresh` and must [`Self::store_answer`]; later ones get
    /// the stored answer, or `InProgress` while the first is still running.
    pub(crate) fn claim_key(&self, key: &str) -> KeyClaim {
        let mut inner = self.inner();
        match inner.answers.get(key) {
            Some(Some(stored)) => KeyClaim::Answered(stored.clone()),
            Some(None) => KeyClaim::InProgress,
            None => {
                inner.answers.insert(key.to_string(), None);
                KeyClaim::Fresh
            }
        }
    }

    pub(crate) fn store_answer(&self, key: &str, answer: StoredAnswer) {
        self.inner().answers.insert(key.to_string(), Some(answer));
    }

    pub(crate) fn record_notification(&self, notification: SentNotification) {
        self.inner().notifications.push(notification);
    }

    /// The fault for this call of `op`, consuming a one-time one.
    fn take_fault(&self, op: PayoutOp) -> Option<PayoutFault> {
        let mut inner = self.inner();
        let (fault, span) = *inner.faults.get(&op)?;
        if span == FaultSpan::Once {
            inner.faults.remove(&op);
        }
        Some(fault)
    }

    /// Applies the fault injected for `op` before it runs: `Refuse` with
    /// the answer to give instead, `Proceed` (after any hang), or
    /// `LoseAnswer` when the operation must run and its answer be replaced.
    pub(crate) async fn before(&self, op: PayoutOp) -> Gate {
        match self.take_fault(op) {
            None => Gate::Proceed,
            Some(PayoutFault::ServerError) => Gate::Refuse(server_error()),
            Some(PayoutFault::RateLimited { retry_after_secs }) => Gate::Refuse(
                HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", retry_after_secs.to_string()))
                    .finish(),
            ),
            Some(PayoutFault::Hang(duration)) => {
                tokio::time::sleep(duration).await;
                Gate::Proceed
            }
            Some(PayoutFault::LoseAnswer) => Gate::LoseAnswer,
        }
    }
}

/// What an operation does after [`PayoutSandbox::before`].
pub(crate) enum Gate {
    Proceed,
    Refuse(HttpResponse),
    LoseAnswer,
}

impl Gate {
    /// The answer to give for a completed operation.
    pub(crate) fn answer(&self, response: HttpResponse) -> HttpResponse {
        match self {
            Gate::LoseAnswer => server_error(),
            Gate::Proceed | Gate::Refuse(_) => response,
        }
    }
}

fn server_error() -> HttpResponse {
    HttpResponse::InternalServerError().finish()
}

/// Sends a notification in the background (a lost one is what the
/// reconciliation covers), after recording it.
/// How long after an operation the sandbox sends its webhook or callback.
const NOTIFICATION_DELAY: Duration = Duration::from_millis(300);

pub(crate) fn send_in_background(payouts: &PayoutSandbox, notification: SentNotification) {
    payouts.record_notification(notification.clone());
    tokio::spawn(async move {
        // The providers notify once the payout is done, not in the instant
        // they accept it.
        tokio::time::sleep(NOTIFICATION_DELAY).await;
        let client = reqwest::Client::new();
        let mut request = client.post(&notification.url).body(notification.body);
        for (name, value) in &notification.headers {
            request = request.header(name, value);
        }
        if let Err(error) = request.send().await {
            tracing::debug!(url = %notification.url, %error, "sandbox notification not delivered");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_fault_injected_once_applies_to_the_next_call_only() {
        let payouts = PayoutSandbox::default();
        payouts.inject(
            PayoutOp::SwishPayout,
            PayoutFault::LoseAnswer,
            FaultSpan::Once,
        );
        assert!(matches!(
            payouts.before(PayoutOp::SwishPayout).await,
            Gate::LoseAnswer
        ));
        assert!(matches!(
            payouts.before(PayoutOp::SwishPayout).await,
            Gate::Proceed
        ));
    }

    #[actix_rt::test]
    async fn a_lasting_fault_applies_until_cleared() {
        let payouts = PayoutSandbox::default();
        let fault = PayoutFault::ServerError;
        payouts.inject(PayoutOp::StripePayout, fault, FaultSpan::Always);
        for _ in 0..2 {
            assert!(matches!(
                payouts.before(PayoutOp::StripePayout).await,
                Gate::Refuse(_)
            ));
        }
        payouts.clear_fault(PayoutOp::StripePayout);
        assert!(matches!(
            payouts.before(PayoutOp::StripePayout).await,
            Gate::Proceed
        ));
    }
}
