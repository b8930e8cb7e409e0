//! `kvitto serve`: wires the store, the bus, the pipeline and both
//! listeners, and takes them down in the order that loses nothing.
//!
//! Shutdown order: stop accepting webhooks (in-flight requests finish and
//! get their answer), let every worker finish and commit the event in hand,
//! flush the producer, then stop the admin listener last so probes see the
//! drain. The integration health monitor (read-only) is stopped first.
//! The whole sequence shares one deadline,
//! `server.shutdown_timeout_secs`, so a supervisor's stop timeout (systemd's
//! `TimeoutStopSec`, Kubernetes' grace period) only has to outlast that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use anyhow::Context as _;
use tokio::time::{Instant, timeout_at};

use crate::admin::{self, AdminState};
use crate::bus::Bus;
use crate::config::Config;
use crate::health::HealthMonitor;
use crate::ingress::{self, IngressState};
use crate::pipeline::Pipeline;
use crate::providers::{ApiClient, ProviderKind};
use crate::settlement::engine::Engine;
use crate::settlement::rails::Rails;
use crate::store::Store;
use crate::telemetry;

/// A running kvitto.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub store: Store,
    pub bus: Bus,
    pipeline: Pipeline,
    settlement: Engine,
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
    topics.push(config.bus.feedback_topic());
    topics.push(config.bus.settlements_topic());
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

    let rails = Rails::try_new(&config.settlement)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("building the payout rails")?;
    let pipeline = Pipeline::start(config.clone(), store.clone(), bus.clone(), api);
    let settlement = Engine::start(config.clone(), store.clone(), bus.clone(), rails.clone());
    let health =
        HealthMonitor::start(&config).context("building the integration health monitor")?;
    let ingress_state = Arc::new(IngressState::new(config.clone(), bus.clone()));
    let settlement_api =
        crate::settlement::http::state(config.clone(), store.clone(), bus.clone(), rails);
    let (webhook, webhook_server, webhook_addr) = ingress::bind(ingress_state, settlement_api)
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
        settlement,
        health,
        webhook_server,
        admin_server,
        shutdown_timeout: Duration::from_secs(config.server.shutdown_timeout_secs),
    })
}

impl Running {
    /// Graceful shutdown in the order of the module docs, all of it within
    /// one deadline, `server.shutdown_timeout_secs` from now: each step gets
    /// what the steps before it left. Whatever the deadline cuts short is
    /// logged at ERROR and left undone; nothing acknowledged is lost by
    /// that, since a webhook is answered only once durable and an event is
    /// committed only after its effects, so the unfinished work is
    /// redelivered (to this instance after a restart, or to another).
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.shutdown_timeout;
        tracing::info!(
            deadline_secs = self.shutdown_timeout.as_secs(),
            "shutting down"
        );
        let mut cut_short = Vec::new();
        // Read-only probes: nothing to finish.
        let _ = timeout_at(deadline, self.health.stop()).await;

        // A request cut off here gets no answer, so its provider retries.
        if timeout_at(deadline, self.webhook_server.stop(true))
            .await
            .is_err()
        {
            cut_short.push("webhook requests in flight");
        }

        // Workers past the deadline keep their events uncommitted; a
        // settlement step cut short is found again in the database at start.
        self.pipeline
            .stop(deadline.saturating_duration_since(Instant::now()))
            .await;
        self.settlement
            .stop(deadline.saturating_duration_since(Instant::now()))
            .await;
        if Instant::now() >= deadline {
            cut_short.push("events being processed");
        }

        // Only messages whose sender is still waiting can be in flight, and
        // none of those has been acknowledged or committed yet.
        let remaining = deadline.saturating_duration_since(Instant::now());
        match timeout_at(deadline, self.bus.flush(remaining)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "bus flush at shutdown failed");
                cut_short.push("bus writes in flight");
            }
            Err(_) => cut_short.push("bus writes in flight"),
        }

        // Last, so probes and scrapes see the drain; cutting it short loses
        // nothing.
        let admin_stopped = timeout_at(deadline, self.admin_server.stop(true))
            .await
            .is_ok();

        if !cut_short.is_empty() {
            tracing::error!(
                deadline_secs = self.shutdown_timeout.as_secs(),
                cut_short = cut_short.join(", "),
                "shutdown deadline reached; unfinished work is not acknowledged or committed and will be redelivered"
            );
        } else if !admin_stopped {
            tracing::warn!(
                deadline_secs = self.shutdown_timeout.as_secs(),
                "admin listener did not stop before the shutdown deadline"
            );
        } else {
            tracing::info!("shutdown complete");
        }
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
