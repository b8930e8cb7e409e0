//! kill -9 of the real `kvitto` binary while webhooks are in flight, then a
//! restart: every acknowledged webhook must end up processed, each exactly
//! once in the database, and no transaction event may be published twice
//! with different content.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kvitto::sandbox::SandboxState;
use kvitto::sandbox::send::{self, SendOptions};
use serde_json::Value;

use crate::support::{Runtime, TestEnv, eventually};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kvitto process that is killed when the test ends, however it ends, so
/// a failing test leaves no daemon behind.
struct Daemon(Child);

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

fn spawn_kvitto(config_path: &std::path::Path) -> Daemon {
    Command::new(env!("CARGO_BIN_EXE_kvitto"))
        .arg("--config")
        .arg(config_path)
        .arg("serve")
        .env("KVITTO_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Daemon)
        .expect("kvitto binary starts")
}

async fn wait_ready(http: &reqwest::Client, admin: &str) {
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
