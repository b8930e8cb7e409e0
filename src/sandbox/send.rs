//! Sends webhooks about generated purchases to a running kvitto, the way the
//! providers would: paced, several at a time, retrying a `503`, sometimes
//! twice, sometimes out of order, sometimes with a forged signature.
//!
//! Every purchase is inserted into the [`SandboxState`] before its first
//! webhook leaves, so kvitto's lookup always finds it. The report counts each
//! provider's answers and lists the purchases kvitto accepted, which is what
//! the tests compare the database with.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::canonical::PaymentState;
use crate::config::IntegrationConfig;
use crate::providers::{self, ProviderKind};
use crate::sandbox::{Purchase, SandboxState, SandboxWebhook, WebhookKind, generate};

/// Attempts after a `503` before the answer counts as unexpected.
const MAX_RETRIES_ON_503: u32 = 3;
/// First pause after a `503`; it doubles with every retry.
const RETRY_BACKOFF_MS: u64 = 200;
const REQUEST_TIMEOUT_SECS: u64 = 10;
/// How much later the out-of-order update is than the first state, inclusive.
const MIN_UPDATE_DELAY_SECS: i64 = 5;
const MAX_UPDATE_DELAY_SECS: i64 = 20;

#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Purchases to generate (each gets one or more webhooks).
    pub count: usize,
    /// HTTP requests per second across all tasks; 0 or less sends unpaced.
    pub rate_per_sec: f64,
    /// Providers whose integrations take part; empty means all configured.
    pub providers: Vec<ProviderKind>,
    /// Share of purchases whose webhook is delivered twice, byte for byte.
    pub duplicate_ratio: f64,
    /// Share of Square purchases whose later `payment.updated` arrives before
    /// the `payment.created`; other providers have no update events.
    pub out_of_order_ratio: f64,
    /// Share of purchases sent with a corrupted signature (expected: 401).
    /// Unsigned providers (Swish, Klarna) have nothing to corrupt.
    pub bad_signature_ratio: f64,
    /// Purchases in flight at once.
    pub concurrency: usize,
    pub seed: u64,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            count: 20,
            rate_per_sec: 10.0,
            providers: Vec::new(),
            duplicate_ratio: 0.0,
            out_of_order_ratio: 0.0,
            bad_signature_ratio: 0.0,
            concurrency: 4,
            seed: 1,
        }
    }
}

/// What one provider's deliveries got back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderReport {
    /// Webhooks delivered, duplicates included, retries not.
    pub sent: usize,
    /// Answered 2xx.
    pub accepted: usize,
    /// Forged signatures answered 401, as they should be.
    pub rejected_as_expected: usize,
    /// Retries after a `503`.
    pub retried_503: usize,
    /// Any other answer, by status (or transport failure), with its count.
    pub unexpected: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default)]
pub struct SendReport {
    pub providers: BTreeMap<ProviderKind, ProviderReport>,
    /// Purchases with a valid signature that kvitto accepted, as the sandbox
    /// API answers them (their final state): what kvitto should store.
    pub purchases: Vec<Purchase>,
    pub elapsed: Duration,
}

impl SendReport {
    pub fn unexpected_total(&self) -> usize {
        self.providers
            .values()
            .flat_map(|report| report.unexpected.values())
            .sum()
    }
}

/// One purchase and how its webhooks are sent.
struct Plan {
    integration: IntegrationConfig,
    /// The purchase as stored in the sandbox (the API's answer).
    truth: Purchase,
    /// The earlier state the `Created` webhook describes when an update
    /// overtakes it.
    first_seen: Option<Purchase>,
    duplicate: bool,
    forged: bool,
}

/// What one delivery got back.
enum Answer {
    Status(u16),
    Failed(String),
}

struct PlanResult {
    provider: ProviderKind,
    truth: Purchase,
    forged: bool,
    answers: Vec<(Answer, u32)>,
}

pub async fn run(
    state: &SandboxState,
    target_base_url: &str,
    options: &SendOptions,
) -> anyhow::Result<SendReport> {
    check_options(options)?;
    let plans = plan(state, options)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
        .build()
        .context("building http client")?;
    let target = target_base_url.trim_end_matches('/');
    let pacer = Pacer::new(options.rate_per_sec);
    let started = Instant::now();

    let results: Vec<PlanResult> = futures::stream::iter(plans)
        .map(|plan| execute(&client, target, &pacer, plan))
        .buffered(options.concurrency.max(1))
        .collect()
        .await;

    let mut report = SendReport {
        elapsed: started.elapsed(),
        ..SendReport::default()
    };
    for result in results {
        record(&mut report, result);
    }
    Ok(report)
}

fn check_options(options: &SendOptions) -> anyhow::Result<()> {
    let ratios = [
        ("duplicate ratio", options.duplicate_ratio),
        ("out-of-order ratio", options.out_of_order_ratio),
        ("bad-signature ratio", options.bad_signature_ratio),
    ];
    for (name, ratio) in ratios {
        if !(0.0..=1.0).contains(&ratio) {
            bail!("{name} must be between 0 and 1, got {ratio}");
        }
    }
    Ok(())
}

/// Generates every purchase up front (deterministic for the seed) and stores
/// it, so the API knows it before any webhook about it leaves.
fn plan(state: &SandboxState, options: &SendOptions) -> anyhow::Result<Vec<Plan>> {
    let integrations: Vec<&IntegrationConfig> = state
        .config
        .integrations
        .iter()
        .filter(|i| options.providers.is_empty() || options.providers.contains(&i.provider))
        .collect();
    if integrations.is_empty() {
        bail!("no configured integration for the chosen providers");
    }
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut plans = Vec::with_capacity(options.count);
    for index in 0..options.count {
        let integration = integrations[index % integrations.len()];
        let now = Utc::now();
        let mut truth = generate::purchase(&mut rng, integration, now);
        let signed = !matches!(
            integration.provider,
            ProviderKind::Swish | ProviderKind::Klarna
        );
        let forged = signed && rng.gen_bool(options.bad_signature_ratio);
        let duplicate = !forged && rng.gen_bool(options.duplicate_ratio);
        let overtaken = !forged
            && integration.provider == ProviderKind::Square
            && rng.gen_bool(options.out_of_order_ratio);
        let first_seen = overtaken.then(|| advance(&mut rng, &mut truth, now));
        state.insert(truth.clone());
        plans.push(Plan {
            integration: integration.clone(),
            truth,
            first_seen,
            duplicate,
            forged,
        });
    }
    Ok(plans)
}

/// Moves the purchase to a later state and returns the earlier one: the
/// payment was first seen approved-but-pending, and completed later.
fn advance(rng: &mut impl Rng, purchase: &mut Purchase, now: DateTime<Utc>) -> Purchase {
    let mut first_seen = purchase.clone();
    first_seen.state = PaymentState::Pending;
    first_seen.updated_at = first_seen.created_at;
    let delay = TimeDelta::seconds(rng.gen_range(MIN_UPDATE_DELAY_SECS..=MAX_UPDATE_DELAY_SECS));
    let latest = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    purchase.updated_at = (purchase.updated_at + delay)
        .min(latest)
        .max(purchase.updated_at);
    purchase.state = PaymentState::Completed;
    first_seen
}

/// Sends one purchase's webhooks in order: an overtaking update first, then
/// the created event, then its duplicate.
async fn execute(client: &reqwest::Client, target: &str, pacer: &Pacer, plan: Plan) -> PlanResult {
    let mut answers = Vec::new();
    if plan.first_seen.is_some() {
        let update = webhook(
            &plan.integration,
            &plan.truth,
            WebhookKind::Updated,
            Utc::now(),
        );
        answers.push(deliver(client, target, pacer, &update).await);
    }
    let described = plan.first_seen.as_ref().unwrap_or(&plan.truth);
    let mut created = webhook(
        &plan.integration,
        described,
        WebhookKind::Created,
        Utc::now(),
    );
    if plan.forged {
        corrupt_signature(&mut created);
    }
    answers.push(deliver(client, target, pacer, &created).await);
    if plan.duplicate {
        answers.push(deliver(client, target, pacer, &created).await);
    }
    PlanResult {
        provider: plan.truth.provider,
        truth: plan.truth,
        forged: plan.forged,
        answers,
    }
}

/// Posts one webhook, retrying a `503` with backoff; returns the final answer
/// and how many retries it took.
async fn deliver(
    client: &reqwest::Client,
    target: &str,
    pacer: &Pacer,
    webhook: &SandboxWebhook,
) -> (Answer, u32) {
    let url = format!("{target}{}", webhook.path_and_query);
    let mut retries = 0;
    loop {
        pacer.wait().await;
        let mut request = client.post(&url).body(webhook.body.clone());
        for (name, value) in &webhook.headers {
            request = request.header(name, value);
        }
        let answer = match request.send().await {
            Ok(response) => Answer::Status(response.status().as_u16()),
            Err(error) if error.is_timeout() => Answer::Failed("timeout".into()),
            Err(_) => Answer::Failed("connection failed".into()),
        };
        if matches!(answer, Answer::Status(503)) && retries < MAX_RETRIES_ON_503 {
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS << retries)).await;
            retries += 1;
            continue;
        }
        return (answer, retries);
    }
}

fn record(report: &mut SendReport, result: PlanResult) {
    let counts = report.providers.entry(result.provider).or_default();
    let mut accepted_any = false;
    for (answer, retries) in result.answers {
        counts.sent += 1;
        counts.retried_503 += retries as usize;
        let unexpected = match (answer, result.forged) {
            (Answer::Status(401), true) => {
                counts.rejected_as_expected += 1;
                continue;
            }
            (Answer::Status(status), false) if (200..300).contains(&status) => {
                counts.accepted += 1;
                accepted_any = true;
                continue;
            }
            (Answer::Status(status), true) => format!("{status} to a forged signature"),
            (Answer::Status(status), false) => status.to_string(),
            (Answer::Failed(reason), _) => reason,
        };
        *counts.unexpected.entry(unexpected).or_default() += 1;
    }
    if accepted_any && !result.forged {
        report.purchases.push(result.truth);
    }
}

/// The webhook a provider sends about a purchase.
pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    kind: WebhookKind,
    now: DateTime<Utc>,
) -> SandboxWebhook {
    use providers::{generic, klarna, shopify, square, stripe, swish, zettle};
    match integration.provider {
        ProviderKind::Square => square::sandbox::webhook(integration, purchase, kind, now),
        ProviderKind::Stripe => stripe::sandbox::webhook(integration, purchase, kind, now),
        ProviderKind::Shopify => shopify::sandbox::webhook(integration, purchase, kind, now),
        ProviderKind::Zettle => zettle::sandbox::webhook(integration, purchase, kind, now),
        ProviderKind::Swish => swish::sandbox::webhook(integration, purchase, kind, now),
        ProviderKind::Klarna => klarna::sandbox::webhook(integration, purchase, kind, now),
        ProviderKind::Generic => generic::sandbox::webhook(integration, purchase, kind, now),
    }
}

/// Changes one character of the signature so it stays well-formed (same
/// alphabet, same length) but no longer matches: the provider-agnostic way
/// to get a 401 rather than a 400. Returns whether there was one to change.
pub fn corrupt_signature(webhook: &mut SandboxWebhook) -> bool {
    let Some((_, value)) = webhook.headers.iter_mut().find(|(name, _)| {
        let name = name.to_ascii_lowercase();
        name.contains("signature") || name.contains("hmac")
    }) else {
        return false;
    };
    // Stripe-style `t=..,v1=<hex>`: change the MAC, not the timestamp. The
    // first character of a base64 MAC carries no padding bits, unlike the last.
    let position = value.find("v1=").map_or(0, |at| at + 3);
    let Some(original) = value[position..].chars().next() else {
        return false;
    };
    let replacement = match original {
        '0'..='8' => char::from(original as u8 + 1),
        '9' => '0',
        'a' => 'b',
        'A' => 'B',
        c if c.is_ascii_uppercase() => 'A',
        _ => 'a',
    };
    value.replace_range(
        position..position + original.len_utf8(),
        &replacement.to_string(),
    );
    true
}

/// Spaces requests evenly at the configured rate across all tasks.
struct Pacer {
    interval: Option<Duration>,
    next_slot: Mutex<Instant>,
}

impl Pacer {
    fn new(rate_per_sec: f64) -> Self {
        let interval = (rate_per_sec.is_finite() && rate_per_sec > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / rate_per_sec));
        Pacer {
            interval,
            next_slot: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next_slot = self.next_slot.lock().expect("pacer lock");
            // A sender that fell behind does not burst to catch up.
            let slot = (*next_slot).max(Instant::now());
            *next_slot = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

impl fmt::Display for SendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<9} {:>6} {:>9} {:>14} {:>13}  unexpected",
            "provider", "sent", "accepted", "rejected (401)", "retried (503)"
        )?;
        for (provider, report) in &self.providers {
            let unexpected = if report.unexpected.is_empty() {
                "-".to_string()
            } else {
                let parts: Vec<String> = report
                    .unexpected
                    .iter()
                    .map(|(what, count)| format!("{what} ×{count}"))
                    .collect();
                parts.join(", ")
            };
            writeln!(
                f,
                "{:<9} {:>6} {:>9} {:>14} {:>13}  {unexpected}",
                provider.as_str(),
                report.sent,
                report.accepted,
                report.rejected_as_expected,
                report.retried_503
            )?;
        }
        write!(
            f,
            "{} purchases accepted in {:.1} s, {} unexpected answers",
            self.purchases.len(),
            self.elapsed.as_secs_f64(),
            self.unexpected_total()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

    use super::*;
    use crate::config::Config;
    use crate::providers::WebhookRequest;
    use crate::providers::generic::{self, fixtures};

    /// A stand-in for kvitto's ingress: checks generic signatures with the
    /// generic adapter's own `verify` and remembers what it got.
    struct Receiver {
        config: Config,
        unavailable_left: AtomicUsize,
        received: Mutex<Vec<Received>>,
    }

    struct Received {
        event_id: String,
        body: Vec<u8>,
        status: u16,
        at: std::time::Instant,
    }

    async fn receive(
        request: HttpRequest,
        path: web::Path<String>,
        body: web::Bytes,
        receiver: web::Data<Receiver>,
    ) -> HttpResponse {
        let unavailable = receiver
            .unavailable_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        let status = if unavailable {
            503
        } else {
            let integration = receiver
                .config
                .integration(ProviderKind::Generic, &path)
                .unwrap();
            let webhook = WebhookRequest {
                headers: request.headers(),
                body: &body,
                query: "",
            };
            match generic::signature::verify(integration, &webhook, Utc::now()) {
                Ok(()) => 200,
                Err(_) => 401,
            }
        };
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        receiver.received.lock().unwrap().push(Received {
            event_id: event["event_id"].as_str().unwrap().to_string(),
            body: body.to_vec(),
            status,
            at: std::time::Instant::now(),
        });
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
    }

    async fn start_receiver(unavailable: usize) -> (web::Data<Receiver>, String) {
        let receiver = web::Data::new(Receiver {
            config: fixtures::config("http://unused"),
            unavailable_left: AtomicUsize::new(unavailable),
            received: Mutex::new(Vec::new()),
        });
        let data = receiver.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/webhooks/generic/{id}", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let address = server.addrs()[0];
        tokio::spawn(server.run());
        (receiver, format!("http://{address}/"))
    }

    fn options(count: usize) -> SendOptions {
        SendOptions {
            count,
            rate_per_sec: 0.0,
            concurrency: 4,
            seed: 11,
            ..SendOptions::default()
        }
    }

    fn generic_state() -> SandboxState {
        SandboxState::new(fixtures::config("http://unused"))
    }

    #[actix_rt::test]
    async fn sender_delivers_duplicates_and_forged_signatures_as_asked() {
        let (receiver, target) = start_receiver(0).await;
        let state = generic_state();
        let options = SendOptions {
            duplicate_ratio: 0.3,
            bad_signature_ratio: 0.3,
            ..options(40)
        };
        let report = run(&state, &target, &options).await.unwrap();
        let counts = &report.providers[&ProviderKind::Generic];
        let received = receiver.received.lock().unwrap();

        assert_eq!(received.len(), counts.sent);
        assert!(counts.unexpected.is_empty(), "{report}");
        assert_eq!(counts.accepted + counts.rejected_as_expected, counts.sent);
        let refused = received.iter().filter(|r| r.status == 401).count();
        assert_eq!(counts.rejected_as_expected, refused);
        assert!(refused > 0, "the seed forged nothing");

        let mut by_event: HashMap<&str, Vec<&Received>> = HashMap::new();
        for delivery in received.iter() {
            by_event
                .entry(delivery.event_id.as_str())
                .or_default()
                .push(delivery);
        }
        let duplicated: Vec<_> = by_event
            .values()
            .filter(|copies| copies.len() > 1)
            .collect();
        assert!(!duplicated.is_empty(), "the seed duplicated nothing");
        for copies in &duplicated {
            assert_eq!(copies.len(), 2);
            assert_eq!(copies[0].body, copies[1].body);
            assert!(copies.iter().all(|copy| copy.status == 200));
        }
        assert_eq!(counts.sent, options.count + duplicated.len());

        assert_eq!(report.purchases.len(), options.count - refused);
        for purchase in &report.purchases {
            assert_eq!(
                state
                    .get(purchase.provider, &purchase.transaction_ref)
                    .as_ref(),
                Some(purchase)
            );
        }
    }

    #[actix_rt::test]
    async fn sender_paces_requests_at_the_rate() {
        let (receiver, target) = start_receiver(0).await;
        let options = SendOptions {
            rate_per_sec: 20.0,
            ..options(10)
        };
        let report = run(&generic_state(), &target, &options).await.unwrap();

        assert_eq!(report.providers[&ProviderKind::Generic].accepted, 10);
        // Ten requests at 20 per second leave nine 50 ms gaps.
        let received = receiver.received.lock().unwrap();
        let first = received.iter().map(|r| r.at).min().unwrap();
        let last = received.iter().map(|r| r.at).max().unwrap();
        assert!(
            last - first >= Duration::from_millis(400),
            "{:?}",
            last - first
        );
        assert!(
            report.elapsed >= Duration::from_millis(400) && report.elapsed < Duration::from_secs(5)
        );
    }

    #[actix_rt::test]
    async fn sender_retries_a_503_with_backoff() {
        let (receiver, target) = start_receiver(2).await;
        let report = run(&generic_state(), &target, &options(1)).await.unwrap();
        let counts = &report.providers[&ProviderKind::Generic];

        assert_eq!(
            (counts.sent, counts.accepted, counts.retried_503),
            (1, 1, 2)
        );
        assert_eq!(receiver.received.lock().unwrap().len(), 3);
        assert!(report.elapsed >= Duration::from_millis(RETRY_BACKOFF_MS * 3));
        assert_eq!(report.purchases.len(), 1);
    }

    #[actix_rt::test]
    async fn sender_reports_unreachable_kvitto_as_unexpected() {
        let report = run(&generic_state(), "http://127.0.0.1:1", &options(2))
            .await
            .unwrap();
        let counts = &report.providers[&ProviderKind::Generic];
        assert_eq!(counts.unexpected.get("connection failed"), Some(&2));
        assert_eq!(report.unexpected_total(), 2);
        assert!(report.purchases.is_empty());
        assert!(
            report.to_string().contains("connection failed ×2"),
            "{report}"
        );
    }

    #[actix_rt::test]
    async fn out_of_order_only_applies_to_square() {
        let (receiver, target) = start_receiver(0).await;
        let options = SendOptions {
            out_of_order_ratio: 1.0,
            ..options(4)
        };
        let report = run(&generic_state(), &target, &options).await.unwrap();
        assert_eq!(report.providers[&ProviderKind::Generic].sent, 4);
        let received = receiver.received.lock().unwrap();
        assert!(received.iter().all(|r| {
            let event: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            event["type"] == "transaction.created"
        }));
    }

    #[test]
    fn advancing_a_purchase_leaves_an_older_first_state() {
        let integration = fixtures::timestamped("http://unused");
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(2);
        let mut purchase = generate::purchase(&mut rng, &integration, now);
        let before = purchase.clone();
        let first_seen = advance(&mut rng, &mut purchase, now);

        assert_eq!(first_seen.state, PaymentState::Pending);
        assert_eq!(purchase.state, PaymentState::Completed);
        assert!(purchase.updated_at > before.updated_at && purchase.updated_at <= now);
        assert!(first_seen.updated_at < purchase.updated_at);
        assert_eq!(
            (first_seen.amount_minor, &first_seen.transaction_ref),
            (purchase.amount_minor, &purchase.transaction_ref)
        );
    }

    fn with_header(name: &str, value: &str) -> SandboxWebhook {
        SandboxWebhook {
            path_and_query: "/".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (name.into(), value.into()),
            ],
            body: vec![],
            event_id: "e".into(),
        }
    }

    #[test]
    fn corrupting_keeps_the_signature_well_formed() {
        let cases = [
            (
                "Stripe-Signature",
                "t=1767225600,v1=9f00",
                "t=1767225600,v1=0f00",
            ),
            ("x-square-hmacsha256-signature", "IjIm+A==", "AjIm+A=="),
            ("X-Shopify-Hmac-Sha256", "abc=", "bbc="),
            ("x-pos-signature", "f00d", "a00d"),
            ("x-izettle-signature", "+abc", "aabc"),
        ];
        for (name, value, corrupted) in cases {
            let mut webhook = with_header(name, value);
            assert!(corrupt_signature(&mut webhook));
            assert_eq!(webhook.headers[1].1, corrupted);
            assert_eq!(webhook.headers[0].1, "application/json");
        }
        let mut unsigned = with_header("x-request-id", "abc");
        assert!(!corrupt_signature(&mut unsigned));
        assert_eq!(unsigned.headers[1].1, "abc");
    }

    #[actix_rt::test]
    async fn ratios_outside_zero_to_one_are_refused() {
        let too_many = SendOptions {
            duplicate_ratio: 1.5,
            ..options(1)
        };
        let error = run(&generic_state(), "http://127.0.0.1:1", &too_many)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("duplicate ratio"), "{error}");
        let none = SendOptions {
            providers: vec![ProviderKind::Stripe],
            ..options(1)
        };
        assert!(
            run(&generic_state(), "http://127.0.0.1:1", &none)
                .await
                .is_err()
        );
    }
}
