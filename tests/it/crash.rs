//! The real `kvitto` binary stopped while webhooks are in flight (kill -9,
//! or SIGTERM, also with work stuck past the shutdown deadline), then
//! restarted: every acknowledged webhook must end up processed, each exactly
//! once in the database, and no transaction event may be published twice
//! with different content. Also read here: its JSON log, in which every line
//! about one event carries that event's id. And the process killed between
//! a payout call and the storing of its answer: paid once all the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvitto::config::{Config, LogFormat};
use kvitto::providers::ProviderKind;
use kvitto::sandbox::payouts::PayoutOp;
use kvitto::sandbox::send::{self, SendOptions};
use kvitto::sandbox::{Fault, SandboxState, WebhookKind};
use kvitto::settlement::config::ApiKeyConfig;
use kvitto::settlement::store as rows;
use kvitto::settlement::{SettlementState, ledger, settlement_id};
use serde_json::Value;

use crate::support::{Runtime, TestEnv, eventually, free_port};

/// A kvitto process that is killed when the test ends, however it ends, so
/// a failing test leaves no daemon behind.
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

pub fn spawn_kvitto(config_path: &Path) -> Daemon {
    spawn_kvitto_with(
        config_path,
        Stdio::inherit(),
        &[("KVITTO_LOG__LEVEL", "warn")],
    )
}

fn spawn_kvitto_with(config_path: &Path, stderr: Stdio, env: &[(&str, &str)]) -> Daemon {
    Command::new(env!("CARGO_BIN_EXE_kvitto"))
        .arg("--config")
        .arg(config_path)
        .arg("serve")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map(Daemon)
        .expect("kvitto binary starts")
}

/// Stderr written to a file, to be read while and after the process runs.
fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("log file"))
}

pub async fn wait_ready(http: &reqwest::Client, admin: &str) {
    eventually("kvitto ready", || async {
        let response = http
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// How the running instance is stopped mid-stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: no chance to clean up.
    Kill,
    /// SIGTERM: the graceful path, which must exit 0 on its own.
    Terminate,
}

fn stop(child: &mut Child, how: Stop) {
    match how {
        Stop::Kill => child.kill().expect("SIGKILL"),
        Stop::Terminate => {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let status = child.wait().unwrap();
    if how == Stop::Terminate {
        assert!(status.success(), "graceful shutdown exited with {status}");
    }
}

async fn kill_nine_mid_stream_loses_nothing_and_doubles_nothing(runtime: Runtime) {
    stopped_mid_stream_loses_nothing_and_doubles_nothing(runtime, Stop::Kill).await;
}

async fn stopped_mid_stream_loses_nothing_and_doubles_nothing(runtime: Runtime, how: Stop) {
    let Some(mut env) = TestEnv::new(runtime).await else {
        return;
    };
    env.config.server.webhook_listen = format!("127.0.0.1:{}", free_port());
    env.config.server.admin_listen = format!("127.0.0.1:{}", free_port());
    let sandbox = Arc::new(SandboxState::new(env.config.clone()));
    let (_handle, sandbox_addr) = kvitto::sandbox::server::start(sandbox.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    env.use_sandbox(sandbox_addr);
    let config_path = env.dir.path().join("kvitto.toml");
    std::fs::write(&config_path, toml::to_string(&env.config).unwrap()).unwrap();

    let http = reqwest::Client::new();
    let admin = env.config.server.admin_listen.clone();
    let mut child = spawn_kvitto(&config_path);
    wait_ready(&http, &admin).await;

    let options_count = 400;
    let options = SendOptions {
        count: options_count,
        rate_per_sec: 400.0,
        concurrency: 8,
        seed: 7,
        ..SendOptions::default()
    };
    let target = format!("http://{}", env.config.server.webhook_listen);
    let sending = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move { send::run(&sandbox, &target, &options).await })
    };
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        stop(&mut child, how);
        child = spawn_kvitto(&config_path);
        wait_ready(&http, &admin).await;
    }
    let report = sending.await.unwrap().expect("sender ran");
    let acknowledged = report.purchases.len() as i64;
    assert!(acknowledged > 0, "{report}");

    let store = kvitto::store::Store::connect(&env.config.database)
        .await
        .unwrap();
    let waited = tokio::time::timeout(crate::support::WAIT, async {
        while store.count_transactions().await.unwrap() < acknowledged {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let stored = store.count_transactions().await.unwrap();
    assert!(
        waited.is_ok(),
        "only {stored} of {acknowledged} acknowledged purchases processed"
    );
    // A webhook made durable just before the kill may have lost its 200 on
    // the way out; it is processed too, as the provider's retry would be.
    assert!(
        stored <= options_count as i64,
        "{stored} transactions from {options_count} purchases"
    );
    for purchase in &report.purchases {
        let id = kvitto::canonical::transaction_id(
            purchase.provider,
            &purchase.integration_id,
            &purchase.transaction_ref,
        );
        let stored = store.transaction(&id.to_string()).await.unwrap();
        assert!(stored.is_some(), "acknowledged purchase lost: {purchase:?}");
    }
    // A bus reader of the output topic: the same event id never carries
    // two different contents, and every stored transaction is published
    // (the last ones may still be on their way when the rows are counted).
    let bus = kvitto::bus::Bus::connect(&env.config.bus, &[])
        .await
        .unwrap();
    let topic = env.config.bus.transactions_topic();
    let seen = eventually("every stored transaction published", || async {
        let deliveries = bus
            .read_all(&topic, 100_000, Duration::from_secs(10))
            .await
            .unwrap();
        let mut seen: HashMap<String, Value> = HashMap::new();
        for delivery in deliveries {
            let event: Value = serde_json::from_slice(&delivery.message.payload).unwrap();
            let id = event["id"].as_str().unwrap().to_string();
            if let Some(earlier) = seen.insert(id.clone(), event.clone()) {
                assert_eq!(
                    earlier, event,
                    "event {id} published twice with different content"
                );
            }
        }
        // Processing may still be finishing webhooks that were made durable
        // but never acknowledged; compare once both sides agree.
        let stored = store.count_transactions().await.unwrap();
        (seen.len() as i64 == stored).then_some(seen)
    })
    .await;
    let stored = store.count_transactions().await.unwrap();
    assert_eq!(
        seen.len() as i64,
        stored,
        "one event per stored transaction"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[actix_rt::test]
async fn kill_nine_mid_stream_embedded() {
    kill_nine_mid_stream_loses_nothing_and_doubles_nothing(Runtime::Embedded).await;
}

#[actix_rt::test]
async fn kill_nine_mid_stream_kafka_postgres() {
    kill_nine_mid_stream_loses_nothing_and_doubles_nothing(Runtime::KafkaPostgres).await;
}

#[actix_rt::test]
async fn sigterm_mid_stream_embedded() {
    stopped_mid_stream_loses_nothing_and_doubles_nothing(Runtime::Embedded, Stop::Terminate).await;
}

#[actix_rt::test]
async fn sigterm_mid_stream_kafka_postgres() {
    stopped_mid_stream_loses_nothing_and_doubles_nothing(Runtime::KafkaPostgres, Stop::Terminate)
        .await;
}

/// A test's kvitto, not yet started: its config in a file, listeners on
/// fixed free ports (they must stay the same across restarts), and the
/// sandbox playing the providers.
struct Setup {
    env: TestEnv,
    sandbox: Arc<SandboxState>,
    config_path: PathBuf,
    http: reqwest::Client,
}

impl Setup {
    async fn new(runtime: Runtime, tweak: impl FnOnce(&mut Config)) -> Option<Setup> {
        let mut env = TestEnv::new(runtime).await?;
        env.config.server.webhook_listen = format!("127.0.0.1:{}", free_port());
        env.config.server.admin_listen = format!("127.0.0.1:{}", free_port());
        tweak(&mut env.config);
        let sandbox = Arc::new(SandboxState::new(env.config.clone()));
        let (_handle, sandbox_addr) =
            kvitto::sandbox::server::start(sandbox.clone(), "127.0.0.1:0")
                .await
                .unwrap();
        env.use_sandbox(sandbox_addr);
        let config_path = env.dir.path().join("kvitto.toml");
        std::fs::write(&config_path, toml::to_string(&env.config).unwrap()).unwrap();
        Some(Setup {
            env,
            sandbox,
            config_path,
            http: reqwest::Client::new(),
        })
    }

    async fn wait_ready(&self) {
        wait_ready(&self.http, &self.env.config.server.admin_listen).await;
    }

    fn webhook_base(&self) -> String {
        format!("http://{}", self.env.config.server.webhook_listen)
    }

    /// The demo integration of `provider`.
    fn integration(&self, provider: ProviderKind) -> &kvitto::config::IntegrationConfig {
        self.env
            .config
            .integrations
            .iter()
            .find(|i| i.provider == provider)
            .expect("a demo integration per provider")
    }

    /// Sends the signed webhook announcing `purchase`.
    async fn send_created(
        &self,
        integration: &kvitto::config::IntegrationConfig,
        purchase: &kvitto::sandbox::Purchase,
    ) -> reqwest::Response {
        let webhook = send::webhook(
            integration,
            purchase,
            WebhookKind::Created,
            chrono::Utc::now(),
        );
        let mut request = self
            .http
            .post(format!("{}{}", self.webhook_base(), webhook.path_and_query))
            .body(webhook.body.clone());
        for (name, value) in &webhook.headers {
            request = request.header(name, value);
        }
        request.send().await.expect("kvitto answers")
    }

    fn log_path(&self) -> PathBuf {
        self.env.dir.path().join("kvitto.log")
    }
}

/// The whole graceful shutdown in the deadline test, kept short.
const SHUTDOWN_DEADLINE_SECS: u64 = 4;
/// How far past the deadline the process may exit: time to leave `main`
/// and for this test to notice. A bound that fails a shutdown which ignores
/// its deadline (each step waiting the full timeout takes twice as long),
/// not a measure of speed.
const EXIT_SLACK: Duration = Duration::from_secs(3);

/// Sends SIGTERM and waits for the exit, failing past `bound`.
async fn terminate_within(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let signalled = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            signalled.elapsed() <= bound,
            "kvitto still running {bound:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook request whose body never finishes arriving: it keeps the
/// webhook listener's graceful stop waiting for as long as it is open.
async fn trickling_webhook(setup: &Setup) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let integration = &setup.env.config.integrations[0];
    let mut stream = tokio::net::TcpStream::connect(&setup.env.config.server.webhook_listen)
        .await
        .unwrap();
    let head = format!(
        "POST /webhooks/{}/{} HTTP/1.1\r\nhost: kvitto\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
        integration.provider, integration.id
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

on_both_runtimes!(sigterm_with_work_stuck_past_the_deadline_exits_in_time_and_loses_nothing);
async fn sigterm_with_work_stuck_past_the_deadline_exits_in_time_and_loses_nothing(
    runtime: Runtime,
) {
    let Some(setup) = Setup::new(runtime, |config| {
        config.server.shutdown_timeout_secs = SHUTDOWN_DEADLINE_SECS;
        // A trickling body holds its request open this long, and a hung
        // provider API its worker: both well past the deadline.
        config.server.request_timeout_ms = 120_000;
        config.processing.api_timeout_ms = 120_000;
        config.processing.api_max_retries = 0;
    })
    .await
    else {
        return;
    };
    for provider in ProviderKind::ALL {
        let hang = Fault::Hang(Duration::from_secs(600));
        setup.sandbox.set_fault(provider, Some(hang));
    }
    let mut child = spawn_kvitto_with(&setup.config_path, log_file(&setup.log_path()), &[]);
    setup.wait_ready().await;

    let options = SendOptions {
        count: 30,
        rate_per_sec: 0.0,
        concurrency: 8,
        seed: 11,
        ..SendOptions::default()
    };
    let report = send::run(&setup.sandbox, &setup.webhook_base(), &options)
        .await
        .expect("sender ran");
    let acknowledged = report.purchases.len();
    assert!(acknowledged > 0, "{report}");
    eventually("a worker waiting on a hung provider API", || async {
        (setup.sandbox.looked_up_count() > 0).then_some(())
    })
    .await;
    let _open_request = trickling_webhook(&setup).await;

    let bound = Duration::from_secs(SHUTDOWN_DEADLINE_SECS) + EXIT_SLACK;
    let status = terminate_within(&mut child, bound).await;
    assert!(status.success(), "graceful shutdown exited with {status}");
    let log = std::fs::read_to_string(setup.log_path()).unwrap();
    assert!(
        log.contains("shutdown deadline reached") && log.contains("events being processed"),
        "the cut-short work is not logged:\n{log}"
    );

    // Restarted with the provider APIs answering: what was in hand at the
    // deadline is redelivered, and every acknowledged purchase is stored,
    // each once.
    for provider in ProviderKind::ALL {
        setup.sandbox.set_fault(provider, None);
    }
    let mut child = spawn_kvitto(&setup.config_path);
    setup.wait_ready().await;
    let store = kvitto::store::Store::connect(&setup.env.config.database)
        .await
        .unwrap();
    eventually("every acknowledged purchase stored", || async {
        let stored = store.count_transactions().await.unwrap();
        (stored >= acknowledged as i64).then_some(())
    })
    .await;
    for purchase in &report.purchases {
        let id = kvitto::canonical::transaction_id(
            purchase.provider,
            &purchase.integration_id,
            &purchase.transaction_ref,
        );
        let stored = store.transaction(&id.to_string()).await.unwrap();
        assert!(stored.is_some(), "acknowledged purchase lost: {purchase:?}");
    }
    // One transaction per acknowledged purchase: none twice, none invented
    // from the request that never finished.
    assert_eq!(
        store.count_transactions().await.unwrap(),
        acknowledged as i64
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The stages one event's log lines go through, in order, from ingress to
/// the worker's commit.
const STAGES: [&str; 7] = [
    "webhook authenticated",
    "event decoded",
    "event deduplicated; first delivery",
    "event verified",
    "transaction stored",
    "transaction published",
    "event committed",
];

/// Every JSON log line that mentions `event_id`.
fn lines_about(log: &Path, event_id: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|line| line.contains(event_id))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

on_both_runtimes!(every_log_line_about_an_event_carries_its_id_through_every_stage);
async fn every_log_line_about_an_event_carries_its_id_through_every_stage(runtime: Runtime) {
    let Some(setup) = Setup::new(runtime, |config| config.log.format = LogFormat::Json).await
    else {
        return;
    };
    let mut child = spawn_kvitto_with(
        &setup.config_path,
        log_file(&setup.log_path()),
        &[("RUST_LOG", "kvitto=debug")],
    );
    setup.wait_ready().await;

    // A Stripe purchase: signed, and looked up on the sandbox's API.
    let integration = setup.integration(ProviderKind::Stripe);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let purchase = kvitto::sandbox::generate::purchase(&mut rng, integration, chrono::Utc::now());
    setup.sandbox.insert(purchase.clone());
    let response = setup.send_created(integration, &purchase).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    let event_id = answer["event_id"].as_str().expect("event id").to_string();

    let lines = eventually("the event committed", || async {
        let lines = lines_about(&setup.log_path(), &event_id);
        let committed = lines.iter().any(|l| l["message"] == "event committed");
        committed.then_some(lines)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    // The id is a field of the line's span, not only somewhere in its text.
    for line in &lines {
        assert_eq!(line["span"]["name"], "event", "{line}");
        assert_eq!(line["span"]["event_id"], event_id.as_str(), "{line}");
        assert_eq!(line["span"]["provider"], "stripe", "{line}");
    }
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    let positions: Vec<usize> = STAGES
        .iter()
        .map(|stage| {
            let found = messages.iter().position(|m| m == stage);
            found.unwrap_or_else(|| panic!("no {stage:?} line for {event_id}: {messages:#?}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "stages out of order: {messages:#?}"
    );
    // Ingress says "accepted" once the bus confirmed the write; the worker
    // may already be decoding by then, so only its presence is fixed.
    assert!(messages.contains(&"webhook accepted"), "{messages:#?}");
}

/// Which payout rail a crash test pays through.
#[derive(Clone, Copy)]
enum PayoutRail {
    Stripe,
    Swish,
}

impl PayoutRail {
    fn destination(self) -> &'static str {
        match self {
            PayoutRail::Stripe => r#"{"rail":"stripe","account":"acct_1KvittoKund42"}"#,
            PayoutRail::Swish => r#"{"rail":"swish","number":"46701234567","ssn":"199001011234"}"#,
        }
    }

    /// How many payouts the sandbox made for the settlement: Stripe's
    /// keyed by the settlement id, Swish's by its instruction UUID.
    fn payouts_made(self, sandbox: &SandboxState, settlement: uuid::Uuid) -> u32 {
        match self {
            PayoutRail::Stripe => sandbox
                .payouts
                .made(PayoutOp::StripePayout, &settlement.to_string()),
            PayoutRail::Swish => sandbox.payouts.made(
                PayoutOp::SwishPayout,
                &settlement.simple().to_string().to_uppercase(),
            ),
        }
    }
}

const CRASH_API_KEY: &str = "fb_test_crash_0123456789abcdef0123";

/// kill -9 after the payout call returned and before its answer was
/// stored: the restarted kvitto asks again with the same idempotency key
/// (Stripe) or instruction UUID (Swish), so the customer is paid once and
/// the settlement still reaches `paid`.
async fn killed_between_payout_and_its_record_pays_once(runtime: Runtime, rail: PayoutRail) {
    let Some(setup) = Setup::new(runtime, |config| {
        let webhooks = format!("http://{}", config.server.webhook_listen);
        config.sandbox.target_url = webhooks.clone();
        if let Some(swish) = &mut config.settlement.swish {
            swish.callback_url = format!(
                "{webhooks}/callbacks/swish/payouts/{}",
                swish.callback_token
            );
        }
        let settlement = &mut config.settlement;
        settlement.tick_ms = 50;
        settlement.retry_min_pause_ms = 50;
        settlement.retry_max_pause_secs = 1;
        settlement.first_status_check_secs = 1;
        // The killed process's lease on the settlement runs out this soon.
        settlement.lease_secs = 2;
        settlement.api_keys = vec![ApiKeyConfig {
            key: CRASH_API_KEY.into(),
            business_id: "gardsbutiken".into(),
        }];
    })
    .await
    else {
        return;
    };
    let stop_after_call = [("FAILPOINTS", "settlement-after-rail-call=sleep(600000)")];
    let mut child = spawn_kvitto_with(&setup.config_path, Stdio::inherit(), &stop_after_call);
    setup.wait_ready().await;

    // A verified 200 kr purchase through a real webhook.
    let integration = setup.integration(ProviderKind::Generic);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(41);
    let mut purchase =
        kvitto::sandbox::generate::purchase(&mut rng, integration, chrono::Utc::now());
    purchase.amount_minor = 20_000;
    purchase.line_items.truncate(1);
    if let Some(item) = purchase.line_items.first_mut() {
        item.quantity = "1".into();
        item.unit_price_minor = Some(20_000);
        item.total_minor = Some(20_000);
    }
    setup.sandbox.insert(purchase.clone());
    assert_eq!(
        setup.send_created(integration, &purchase).await.status(),
        200
    );
    let store = kvitto::store::Store::connect(&setup.env.config.database)
        .await
        .unwrap();
    let transaction_id = kvitto::canonical::transaction_id(
        purchase.provider,
        &integration.id,
        &purchase.transaction_ref,
    )
    .to_string();
    eventually("purchase stored", || async {
        store
            .transaction(&transaction_id)
            .await
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;

    let feedback = format!(
        r#"{{"feedback_id":"fb-crash","business_id":"gardsbutiken","location_id":"uppsala",
           "customer_ref":"cust-crash","purchase":{{"provider_transaction_id":"{}"}},
           "quality_score":95,"payout":{}}}"#,
        purchase.transaction_ref,
        rail.destination()
    );
    let response = setup
        .http
        .post(format!("{}/v1/feedback", setup.webhook_base()))
        .bearer_auth(CRASH_API_KEY)
        .header("content-type", "application/json")
        .body(feedback)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // The provider has made the payout; kvitto sits on the fail point with
    // the answer in hand and nothing of it stored (without the fail point
    // the answer would be stored within a tick).
    let id = settlement_id("fb-crash");
    eventually("the payout made", || async {
        (rail.payouts_made(&setup.sandbox, id) == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pool = store.pool();
    let before = rows::settlement(pool, &id.to_string())
        .await
        .unwrap()
        .expect("settlement written before the call");
    assert_eq!(before.state, SettlementState::Pending, "{before:?}");
    assert_eq!(before.attempts, 1, "{before:?}");
    stop(&mut child, Stop::Kill);

    let mut child = spawn_kvitto(&setup.config_path);
    setup.wait_ready().await;
    let paid = eventually("settlement paid after the restart", || async {
        rows::settlement(pool, &id.to_string())
            .await
            .ok()
            .flatten()
            .filter(|s| s.state == SettlementState::Paid)
    })
    .await;
    assert_eq!(paid.amount_minor, 2_000);
    assert_eq!(rail.payouts_made(&setup.sandbox, id), 1, "paid twice");
    if let PayoutRail::Stripe = rail {
        let transfers = setup
            .sandbox
            .payouts
            .made(PayoutOp::StripeTransfer, &id.to_string());
        assert_eq!(transfers, 1, "transferred twice");
    }
    let report = ledger::check(pool).await.unwrap();
    assert!(report.is_balanced(), "{:?}", report.problems);
    assert_eq!(
        ledger::balance(pool, ledger::CUSTOMERS_PAYABLE)
            .await
            .unwrap(),
        0
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[actix_rt::test]
async fn killed_between_stripe_payout_and_its_record_embedded() {
    killed_between_payout_and_its_record_pays_once(Runtime::Embedded, PayoutRail::Stripe).await;
}

#[actix_rt::test]
async fn killed_between_stripe_payout_and_its_record_kafka_postgres() {
    killed_between_payout_and_its_record_pays_once(Runtime::KafkaPostgres, PayoutRail::Stripe)
        .await;
}

#[actix_rt::test]
async fn killed_between_swish_payout_and_its_record_embedded() {
    killed_between_payout_and_its_record_pays_once(Runtime::Embedded, PayoutRail::Swish).await;
}

#[actix_rt::test]
async fn killed_between_swish_payout_and_its_record_kafka_postgres() {
    killed_between_payout_and_its_record_pays_once(Runtime::KafkaPostgres, PayoutRail::Swish).await;
}
