//! Shared helpers: a real kvitto (in process, real sockets), the sandbox
//! playing the providers, and real databases and brokers.
//!
//! Tests that need PostgreSQL or the broker read `KVITTO_TEST_POSTGRES_URL`
//! and `KVITTO_TEST_BROKERS` (set by `scripts/test`). When they are unset
//! the test fails loudly under CI and is skipped with a note elsewhere.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvitto::app::{self, Running};
use kvitto::config::Config;
use kvitto::providers::ProviderKind;
use kvitto::sandbox::{Purchase, SandboxState, SandboxWebhook, WebhookKind};
use sqlx::{Connection, Executor};

/// Runs an async test body, `async fn NAME(runtime: Runtime)`, once per
/// runtime: as `NAME::embedded` and `NAME::kafka_postgres`.
macro_rules! on_both_runtimes {
    ($name:ident) => {
        mod $name {
            #[actix_rt::test]
            async fn embedded() {
                super::$name(crate::support::Runtime::Embedded).await
            }

            #[actix_rt::test]
            async fn kafka_postgres() {
                super::$name(crate::support::Runtime::KafkaPostgres).await
            }
        }
    };
}

/// Where a test's kvitto keeps its events and rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Embedded bus and SQLite, in a temporary folder.
    Embedded,
    /// The Kafka-protocol broker and PostgreSQL.
    KafkaPostgres,
}

pub const BOTH: [Runtime; 2] = [Runtime::Embedded, Runtime::KafkaPostgres];

/// A bound on waiting for asynchronous processing: generous, since it only
/// keeps a broken test from hanging and measures nothing.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn env_or_skip(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{name} must be set in CI (scripts/test sets it)")
        }
        _ => {
            eprintln!("skipping: {name} is not set (run scripts/test)");
            None
        }
    }
}

/// The shipped demo config, made private to one test: its own folder,
/// database, topics and consumer group, and listeners on free ports.
pub struct TestEnv {
    pub config: Config,
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
    pub database: Option<TestDatabase>,
}

impl TestEnv {
    /// `None` when the runtime's servers are not available outside CI.
    pub async fn new(runtime: Runtime) -> Option<TestEnv> {
        let text = std::fs::read_to_string("config/kvitto.toml").expect("config/kvitto.toml");
        let mut config = Config::from_toml(&text).expect("shipped config is valid");
        let dir = tempfile::tempdir().expect("temp dir");
        config.server.webhook_listen = "127.0.0.1:0".into();
        config.server.admin_listen = "127.0.0.1:0".into();
        config.server.workers = 2;
        config.server.shutdown_timeout_secs = 5;
        config.processing.api_min_backoff_ms = 10;
        config.processing.api_max_backoff_ms = 50;
        config.processing.retry_pause_ms = 50;
        config.processing.api_timeout_ms = 2_000;
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let mut database = None;
        match runtime {
            Runtime::Embedded => {
                config.database.url = format!("sqlite://{}/kvitto.sqlite", dir.path().display());
                config.bus.embedded_path = dir.path().join("bus.sqlite");
            }
            Runtime::KafkaPostgres => {
                let brokers = env_or_skip("KVITTO_TEST_BROKERS")?;
                let base = env_or_skip("KVITTO_TEST_POSTGRES_URL")?;
                let db = TestDatabase::create(&base, &unique[..12]).await;
                config.database.url = db.url.clone();
                database = Some(db);
                config.bus.brokers = brokers;
                config.bus.topic_prefix = format!("kvitto.t{}.", &unique[..12]);
                config.bus.consumer_group = format!("kvitto-{}", &unique[..12]);
                config.bus.partitions = 3;
            }
        }
        Some(TestEnv {
            config,
            dir,
            runtime,
            database,
        })
    }

    /// Points every integration's API at a sandbox on `addr`.
    pub fn use_sandbox(&mut self, addr: SocketAddr) {
        for integration in &mut self.config.integrations {
            let base = format!("http://{addr}/{}", integration.provider);
            integration.api_base_url = Some(base.clone());
            if integration.oauth_base_url.is_some() {
                integration.oauth_base_url = Some(base);
            }
        }
        self.config.sandbox.listen = addr.to_string();
        if let Some(stripe) = &mut self.config.settlement.stripe {
            stripe.api_base_url = format!("http://{addr}/stripe");
        }
        if let Some(swish) = &mut self.config.settlement.swish {
            swish.api_base_url = format!("http://{addr}/swish");
        }
    }
}

/// A PostgreSQL database made for one test.
pub struct TestDatabase {
    pub url: String,
}

impl TestDatabase {
    pub async fn create(base_url: &str, suffix: &str) -> TestDatabase {
        // The creation time in the name lets the test command clear out
        // databases left by earlier runs without touching a running one's.
        let name = format!("kvitto_test_{}_{suffix}", chrono::Utc::now().timestamp());
        let mut admin = sqlx::PgConnection::connect(base_url)
            .await
            .expect("connecting to PostgreSQL");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("creating test database");
        let (prefix, _) = base_url.rsplit_once('/').expect("database URL has a path");
        TestDatabase {
            url: format!("{prefix}/{name}"),
        }
    }
}

/// kvitto and the sandbox, running.
pub struct Harness {
    pub env: TestEnv,
    pub kvitto: Running,
    pub sandbox: Arc<SandboxState>,
    pub sandbox_addr: SocketAddr,
    pub http: reqwest::Client,
}

impl Harness {
    /// Starts the sandbox, then kvitto pointed at it. `tweak` may change the
    /// config first (e.g. switch an integration to `signature-only`).
    pub async fn start(runtime: Runtime, tweak: impl FnOnce(&mut Config)) -> Option<Harness> {
        let mut env = TestEnv::new(runtime).await?;
        tweak(&mut env.config);
        // The sandbox sends Stripe payout webhooks and Swish payout
        // callbacks to kvitto, so kvitto's address is chosen before either
        // starts.
        let port = free_port();
        env.config.server.webhook_listen = format!("127.0.0.1:{port}");
        env.config.sandbox.target_url = format!("http://127.0.0.1:{port}");
        if let Some(swish) = &mut env.config.settlement.swish {
            swish.callback_url = format!(
                "http://127.0.0.1:{port}/callbacks/swish/payouts/{}",
                swish.callback_token
            );
        }
        let sandbox = Arc::new(SandboxState::new(env.config.clone()));
        let (_handle, sandbox_addr) =
            kvitto::sandbox::server::start(sandbox.clone(), "127.0.0.1:0")
                .await
                .expect("sandbox starts");
        env.use_sandbox(sandbox_addr);
        let kvitto = app::start(env.config.clone()).await.expect("kvitto starts");
        Some(Harness {
            env,
            kvitto,
            sandbox,
            sandbox_addr,
            http: reqwest::Client::new(),
        })
    }

    pub fn webhook_url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.kvitto.webhook_addr, path_and_query)
    }

    pub fn integration(&self, provider: ProviderKind) -> &kvitto::config::IntegrationConfig {
        self.env
            .config
            .integrations
            .iter()
            .find(|i| i.provider == provider)
            .expect("demo integration")
    }

    /// A new purchase for the provider's demo integration, known to the
    /// sandbox's API.
    pub fn purchase(&self, provider: ProviderKind, seed: u64) -> Purchase {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let purchase = kvitto::sandbox::generate::purchase(
            &mut rng,
            self.integration(provider),
            chrono::Utc::now(),
        );
        self.sandbox.insert(purchase.clone());
        purchase
    }

    pub fn webhook(&self, purchase: &Purchase, kind: WebhookKind) -> SandboxWebhook {
        let integration = self.integration(purchase.provider);
        kvitto::sandbox::send::webhook(integration, purchase, kind, chrono::Utc::now())
    }

    /// Posts a webhook and returns the status code.
    pub async fn send(&self, webhook: &SandboxWebhook) -> reqwest::StatusCode {
        let mut request = self
            .http
            .post(self.webhook_url(&webhook.path_and_query))
            .body(webhook.body.clone());
        for (name, value) in &webhook.headers {
            request = request.header(name, value);
        }
        request.send().await.expect("kvitto answers").status()
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.kvitto.admin_addr);
        self.http
            .get(url)
            .send()
            .await
            .expect("admin answers")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn transaction_count(&self) -> i64 {
        self.kvitto.store.count_transactions().await.expect("count")
    }

    /// Counts rows matching a SQL condition on `processed_events`.
    pub async fn processed_count(&self, condition: &str) -> i64 {
        use sqlx::Row;
        let sql = format!("SELECT COUNT(*) AS n FROM processed_events WHERE {condition}");
        let row = sqlx::query(&sql)
            .fetch_one(self.kvitto.store.pool())
            .await
            .expect("query");
        row.try_get::<i64, _>("n").expect("count")
    }

    /// Messages on an output topic, read from the beginning.
    /// Every message on `topic`. The read stops early once every partition
    /// is read to its end; the timeout is for a big topic on a busy broker.
    pub async fn topic(&self, topic: &str) -> Vec<kvitto::bus::Delivery> {
        self.kvitto
            .bus
            .read_all(topic, 100_000, Duration::from_secs(60))
            .await
            .expect("read topic")
    }

    pub async fn shutdown(self) {
        self.kvitto.shutdown().await;
    }
}

/// A port no one listens on now, for a listener whose address others must
/// know before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Polls `check` until it returns `Some`, or panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, check).await
}

/// [`eventually`] with a deadline of its own, for work that is large on
/// purpose.
pub async fn eventually_within<T, F, Fut>(what: &str, wait: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A generic-POS webhook body for a transaction, as a merchant's POS would
/// send it, and the headers that sign it with the demo integration.
pub fn generic_webhook(
    harness: &Harness,
    event_id: &str,
    transaction_id: &str,
    amount: &str,
    extra: &str,
) -> SandboxWebhook {
    let integration = harness.integration(ProviderKind::Generic);
    let body = format!(
        r#"{{"event_id":"{event_id}","type":"transaction.created","transaction_id":"{transaction_id}","amount":"{amount}","currency":"SEK","status":"completed","occurred_at":"2026-03-01T10:15:30Z","line_items":[{{"name":"Kanelbulle","quantity":"1","unit_price":"{amount}"}}]{extra}}}"#
    );
    signed_generic(integration, body.into_bytes(), event_id)
}

/// Signs an arbitrary body with the generic demo integration.
pub fn signed_generic(
    integration: &kvitto::config::IntegrationConfig,
    body: Vec<u8>,
    event_id: &str,
) -> SandboxWebhook {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = kvitto::providers::generic::signature::sign(integration, timestamp, &body);
    SandboxWebhook {
        path_and_query: format!("/webhooks/generic/{}", integration.id),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                integration
                    .signature_header
                    .clone()
                    .expect("generic header"),
                signature,
            ),
            (
                integration
                    .timestamp_header
                    .clone()
                    .expect("generic timestamp header"),
                timestamp.to_string(),
            ),
        ],
        body,
        event_id: event_id.to_string(),
    }
}
