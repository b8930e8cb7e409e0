//! `kvitto serve`: wires the store, the bus, the pipeline and both
//! listeners, and takes them down in the order that loses nothing.
//!
//! Shutdown order: stop accepting webhooks (in-flight requests finish and
//! get their answer), let every worker finish and commit the event in hand,
//! flush the producer, then stop the admin listener last so probes see the
//! drain. The integration health monitor (read-only) is stopped first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use anyhow::Context as _;

use crate::admin::{self, AdminState};
use crate::bus::Bus;
use crate::config::Config;
use crate::health::HealthMonitor;
use crate::ingress::{self, IngressState};
use crate::pipeline::Pipeline;
use crate::providers::{ApiClient, ProviderKind};
use crate::store::Store;
use crate::telemetry;

/// A running kvitto.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub store: Store,
    pub bus: Bus,
    pipeline: Pipeline,
    health: HealthMonitor,
    webhook_server: ServerHandle,
    admin_server: ServerHandle,
    shutdown_timeout: Duration,
}

/// Every topic kvitto writes or reads, for creation at start.
pub fn topics(config: &Config) -> Vec<String> {
    let mut topics: Vec<String> = ProviderKind::ALL
        .iter()
        .map(|p| config.bus.webhook_topic(*p))
        .collect();
    topics.push(config.bus.transactions_topic());
    topics.push(config.bus.deadletter_topic());
    topics
}

/// Starts everything and returns once both listeners are bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = telemetry::catalog::install();
    let store = Store::connect(&config.database)
        .await
        .context("connecting to the database")?;
    store
        .migrate()
        .await
        .context("applying database migrations")?;
    let bus = Bus::connect(&config.bus, &topics(&config))
        .await
        .context("connecting to the bus")?;
    let api = ApiClient::try_new(&config.processing).context("building the provider API client")?;

    let pipeline = Pipeline::start(config.clone(), store.clone(), bus.clone(), api);
    let health =
        HealthMonitor::start(&config).context("building the integration health monitor")?;
    let ingress_state = Arc::new(IngressState::new(config.clone(), bus.clone()));
    let (webhook, webhook_server, webhook_addr) = ingress::bind(ingress_state)
        .with_context(|| format!("binding {}", config.server.webhook_listen))?;
    let admin_state = Arc::new(AdminState {
        metrics,
        bus: bus.clone(),
        store: store.clone(),
        health: health.board(),
    });
    let (admin, admin_server, admin_addr) =
        admin::bind(&config.server.admin_listen, admin_state)
            .with_context(|| format!("binding {}", config.server.admin_listen))?;
    actix_rt::spawn(webhook);
    actix_rt::spawn(admin);

    let bus_kind = if config.bus.is_kafka() {
        "kafka"
    } else {
        "embedded"
    };
    tracing::info!(
        %webhook_addr,
        %admin_addr,
        bus = bus_kind,
        providers = ?config.active_providers(),
        "kvitto listening"
    );
    Ok(Running {
        webhook_addr,
        admin_addr,
        store,
        bus,
        pipeline,
        health,
        webhook_server,
        admin_server,
        shutdown_timeout: Duration::from_secs(config.server.shutdown_timeout_secs),
    })
}

impl Running {
    /// Graceful shutdown; see the module docs for the order.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.health.stop().await;
        self.webhook_server.stop(true).await;
        self.pipeline.stop(self.shutdown_timeout).await;
        if let Err(error) = self.bus.flush(self.shutdown_timeout).await {
            tracing::error!(%error, "bus flush at shutdown failed");
        }
        self.admin_server.stop(true).await;
        tracing::info!("shutdown complete");
    }
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
