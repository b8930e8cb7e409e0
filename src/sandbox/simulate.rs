//! `kvitto simulate`: plays every configured provider against a running
//! kvitto and checks it did its part.
//!
//! It serves the providers' lookup APIs on `sandbox.listen`, sends webhooks
//! to `sandbox.target_url`, prints the per-provider report, then waits until
//! kvitto has looked up every accepted purchase whose integration verifies
//! through the provider API. Then, playing the feedback service, it sends
//! scored feedback on a share of the completed purchases and follows each
//! until its reward is paid (through the sandbox's Stripe and Swish payout
//! APIs), failed or not given. It fails, saying why, on unexpected answers
//! or when kvitto does not finish in time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::canonical::VerificationMode;
use crate::config::Config;
use crate::providers::ProviderKind;
use crate::sandbox::send::{self, SendOptions};
use crate::sandbox::{Purchase, SandboxState, feedback, server};

/// Purchases in flight at once while sending.
const SEND_CONCURRENCY: usize = 8;
const POLL_INTERVAL_MS: u64 = 250;
const PROGRESS_EVERY_SECS: u64 = 3;

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Purchases to generate.
    pub count: usize,
    /// HTTP requests per second.
    pub rate: f64,
    /// Providers to play; empty means every configured one.
    pub providers: Vec<ProviderKind>,
    /// Share of purchases delivered twice (0 to 1).
    pub duplicates: f64,
    /// Share of Square purchases whose update overtakes the created event.
    pub out_of_order: f64,
    /// Share of purchases sent with a forged signature, expecting 401.
    pub bad_signatures: f64,
    pub seed: u64,
    /// How long to wait for kvitto's lookups after sending, and again for
    /// the rewards to be settled.
    pub wait_secs: u64,
    /// Share of completed purchases that get feedback (0 sends none).
    pub feedback: f64,
    /// Share of feedback whose payout destination the provider refuses.
    pub failing_payouts: f64,
    /// Only serve the provider APIs, until Ctrl-C; send nothing.
    pub serve_only: bool,
}

pub async fn simulate(config: Config, options: SimulateOptions) -> anyhow::Result<()> {
    let listen = config.sandbox.listen.clone();
    let target = config.sandbox.target_url.clone();
    let state = Arc::new(SandboxState::new(config));
    let (handle, address) = server::start(state.clone(), &listen)
        .await
        .with_context(|| format!("starting the sandbox on {listen}"))?;
    println!("sandbox serving provider APIs on http://{address}");

    let outcome = if options.serve_only {
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    } else {
        send_and_check(&state, &target, &options).await
    };
    handle.stop(true).await;
    outcome
}

async fn send_and_check(
    state: &SandboxState,
    target: &str,
    options: &SimulateOptions,
) -> anyhow::Result<()> {
    let send_options = SendOptions {
        count: options.count,
        rate_per_sec: options.rate,
        providers: options.providers.clone(),
        duplicate_ratio: options.duplicates,
        out_of_order_ratio: options.out_of_order,
        bad_signature_ratio: options.bad_signatures,
        concurrency: SEND_CONCURRENCY,
        seed: options.seed,
    };
    let admin = format!("http://{}/metrics", state.config.server.admin_listen);
    let before = scrape_totals(&admin).await;
    println!("sending {} purchases to {target}", options.count);
    let report = send::run(state, target, &send_options).await?;
    println!("{report}");

    let expected: Vec<&Purchase> = report
        .purchases
        .iter()
        .filter(|purchase| verified_by_api(state, purchase))
        .collect();
    let timeout = Duration::from_secs(options.wait_secs);
    wait_for_lookups(state, &expected, timeout).await?;
    match before {
        Some(before) => wait_for_processing(&admin, before, timeout).await?,
        None => println!(
            "note: kvitto's metrics at {admin} are not reachable; not waiting for processing"
        ),
    }

    let unexpected = report.unexpected_total();
    if unexpected > 0 {
        bail!("kvitto gave {unexpected} unexpected answers (see the table above)");
    }
    println!(
        "ok: kvitto confirmed all {} purchases with the provider APIs",
        expected.len()
    );
    if options.feedback <= 0.0 {
        return Ok(());
    }
    if !state.config.settlement.enabled {
        println!("note: settlement is disabled in the config; sending no feedback");
        return Ok(());
    }
    let purchases: Vec<&Purchase> = report.purchases.iter().collect();
    let feedback_options = feedback::FeedbackOptions {
        share: options.feedback.min(1.0),
        failing_payouts: options.failing_payouts.clamp(0.0, 1.0),
        seed: options.seed,
    };
    let outcome = feedback::run(
        &state.config,
        target,
        &purchases,
        &feedback_options,
        timeout,
    )
    .await?;
    print!("{outcome}");
    println!("ok: kvitto decided every feedback and settled every reward");
    Ok(())
}

/// kvitto's totals of accepted webhooks and processed events, read from its
/// `/metrics`; `None` when it cannot be read.
async fn scrape_totals(url: &str) -> Option<(u64, u64)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    let sum = |prefix: &str, filter: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with(prefix) && line.contains(filter))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Some((
        sum("kvitto_webhooks_received_total{", "outcome=\"accepted\""),
        sum("kvitto_events_processed_total{", ""),
    ))
}

/// Waits until kvitto has processed as many events as it accepted webhooks
/// since `before`: until then, some of this run is still in its pipeline.
async fn wait_for_processing(
    url: &str,
    before: (u64, u64),
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (accepted, processed) = scrape_totals(url).await.unwrap_or(before);
        let (accepted, processed) = (accepted - before.0, processed.saturating_sub(before.1));
        if processed >= accepted {
            println!("kvitto processed all {accepted} webhooks it accepted");
            return Ok(());
        }
        if started.elapsed() >= timeout {
            bail!(
                "timed out after {} s: kvitto processed {processed} of {accepted} accepted webhooks \
                 (see its log: a provider API may be failing)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

fn verified_by_api(state: &SandboxState, purchase: &Purchase) -> bool {
    state
        .config
        .integration(purchase.provider, &purchase.integration_id)
        .is_some_and(|integration| integration.verification == VerificationMode::Api)
}

async fn wait_for_lookups(
    state: &SandboxState,
    expected: &[&Purchase],
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_progress = started;
    loop {
        let pending: Vec<&&Purchase> = expected
            .iter()
            .filter(|p| state.lookups_of(p.provider, &p.transaction_ref) == 0)
            .collect();
        let Some(first) = pending.first() else {
            return Ok(());
        };
        if started.elapsed() >= timeout {
            bail!(
                "timed out after {} s: kvitto looked up {} of {} purchases (still missing e.g. {} {}); \
                 kvitto does not look up a purchase it already has, so a repeat run needs a new --seed",
                timeout.as_secs(),
                expected.len() - pending.len(),
                expected.len(),
                first.provider,
                first.transaction_ref
            );
        }
        if last_progress.elapsed() >= Duration::from_secs(PROGRESS_EVERY_SECS) {
            println!(
                "waiting for kvitto to look up {} of {} purchases",
                pending.len(),
                expected.len()
            );
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use chrono::Utc;

    use super::*;
    use crate::config::ProcessingConfig;
    use crate::providers::generic::{self, fixtures};
    use crate::providers::{ApiClient, EventAction, RawDelivery, WebhookRequest};

    /// Just enough of kvitto: verify, decode and, when asked to, look up.
    struct MiniKvitto {
        config: Config,
        client: ApiClient,
        looks_up: bool,
    }

    async fn receive(
        request: HttpRequest,
        path: web::Path<String>,
        body: web::Bytes,
        kvitto: web::Data<MiniKvitto>,
    ) -> HttpResponse {
        let Some(integration) = kvitto.config.integration(ProviderKind::Generic, &path) else {
            return HttpResponse::NotFound().finish();
        };
        let webhook = WebhookRequest {
            headers: request.headers(),
            body: &body,
            query: "",
        };
        if generic::signature::verify(integration, &webhook, Utc::now()).is_err() {
            return HttpResponse::Unauthorized().finish();
        }
        let delivery = RawDelivery {
            body: &body,
            headers: &[],
            query: "",
        };
        let Ok(event) = generic::decode::decode(&delivery) else {
            return HttpResponse::BadRequest().finish();
        };
        if let (true, EventAction::Purchase(claim)) = (kvitto.looks_up, event.action) {
            let looked_up =
                generic::api::lookup(&kvitto.client, integration, &claim.transaction_ref).await;
            assert!(looked_up.is_ok(), "{looked_up:?}");
        }
        HttpResponse::Ok().finish()
    }

    /// A config whose sandbox listens on a free port its integrations point at,
    /// and a running mini kvitto as the target.
    async fn setup(looks_up: bool) -> Config {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = fixtures::config(&format!("http://127.0.0.1:{port}/generic"));
        config.sandbox.listen = format!("127.0.0.1:{port}");

        let client = ApiClient::try_new(&ProcessingConfig::default()).unwrap();
        let kvitto = web::Data::new(MiniKvitto {
            config: config.clone(),
            client,
            looks_up,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(kvitto.clone())
                .route("/webhooks/generic/{id}", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        config.sandbox.target_url = format!("http://{}", server.addrs()[0]);
        tokio::spawn(server.run());
        config
    }

    fn options(wait_secs: u64) -> SimulateOptions {
        SimulateOptions {
            count: 6,
            rate: 0.0,
            providers: vec![ProviderKind::Generic],
            duplicates: 0.3,
            out_of_order: 0.0,
            bad_signatures: 0.3,
            seed: 5,
            wait_secs,
            feedback: 0.0,
            failing_payouts: 0.0,
            serve_only: false,
        }
    }

    #[actix_rt::test]
    async fn simulate_succeeds_once_kvitto_looked_everything_up() {
        let config = setup(true).await;
        simulate(config, options(10)).await.unwrap();
    }

    #[actix_rt::test]
    async fn simulate_fails_clearly_when_lookups_never_come() {
        let config = setup(false).await;
        let error = simulate(config, options(1)).await.unwrap_err();
        assert!(
            error.to_string().starts_with("timed out after 1 s"),
            "{error}"
        );
    }

    #[actix_rt::test]
    async fn simulate_fails_when_kvitto_is_unreachable() {
        let mut config = setup(true).await;
        config.sandbox.target_url = "http://127.0.0.1:1".into();
        let error = simulate(config, options(1)).await.unwrap_err();
        assert!(error.to_string().contains("unexpected answers"), "{error}");
    }
}
