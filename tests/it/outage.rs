//! The broker goes away and comes back: webhooks get 503 with Retry-After
//! while it is gone, nothing half-accepted is stored, and kvitto recovers
//! by itself when it returns.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{Harness, Runtime, env_or_skip, eventually, generic_webhook};

/// A broker of this test's own behind a TCP proxy, so the test can make
/// the broker unreachable (the proxy drops every connection and refuses new
/// ones) and reachable again, on the same address, without disturbing any
/// other test. The broker advertises the proxy's address, so clients always
/// come back through it.
struct Broker {
    process: Child,
    _dir: tempfile::TempDir,
    proxy_port: u16,
    upstream_port: u16,
    proxy: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    async fn start(binary: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let (proxy_port, upstream_port) = (free_port(), free_port());
        let listen = format!("tcp://127.0.0.1:{upstream_port}");
        let advertised = format!("tcp://127.0.0.1:{proxy_port}");
        // In-memory storage: this broker is never restarted, and tansu's
        // SQLite engine panics when connections are cut mid-request.
        let process = Command::new(binary)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &listen,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        eventually("the test broker listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", upstream_port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        let mut broker = Broker {
            process,
            _dir: dir,
            proxy_port,
            upstream_port,
            proxy: None,
            connections: Arc::default(),
        };
        broker.reachable().await;
        broker
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }

    async fn reachable(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.proxy_port))
            .await
            .expect("proxy binds");
        let upstream = self.upstream_port;
        let connections = self.connections.clone();
        self.proxy = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        }));
    }

    fn unreachable(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.unreachable();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[actix_rt::test]
async fn broker_outage_answers_503_stores_nothing_and_recovers() {
    let Some(tansu) = env_or_skip("KVITTO_TEST_TANSU") else {
        return;
    };
    let mut broker = Broker::start(&tansu).await;
    let brokers = broker.address();
    let Some(h) = Harness::start(Runtime::KafkaPostgres, |config| {
        config.bus.brokers = brokers;
        config.bus.publish_timeout_ms = 1_500;
    })
    .await
    else {
        return;
    };

    assert_eq!(
        h.send(&generic_webhook(&h, "before-1", "txn-before", "10.00", ""))
            .await,
        StatusCode::OK
    );
    eventually("the first transaction", || async {
        (h.transaction_count().await == 1).then_some(())
    })
    .await;

    broker.unreachable();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = generic_webhook(&h, "during-1", "txn-during", "20.00", "");
    let mut request = h
        .http
        .post(h.webhook_url(&during.path_and_query))
        .body(during.body.clone());
    for (name, value) in &during.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let ready = h
        .http
        .get(format!("http://{}/readyz", h.kvitto.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    broker.reachable().await;
    let after = generic_webhook(&h, "after-1", "txn-after", "30.00", "");
    eventually("a webhook accepted after the broker returned", || async {
        (h.send(&after).await == StatusCode::OK).then_some(())
    })
    .await;
    eventually("the transaction after recovery", || async {
        (h.transaction_count().await == 2).then_some(())
    })
    .await;
    let id = kvitto::canonical::transaction_id(
        kvitto::providers::ProviderKind::Generic,
        &h.integration(kvitto::providers::ProviderKind::Generic).id,
        "txn-during",
    );
    assert!(
        h.kvitto
            .store
            .transaction(&id.to_string())
            .await
            .unwrap()
            .is_none(),
        "a 503'd webhook was stored"
    );
    h.shutdown().await;
}
