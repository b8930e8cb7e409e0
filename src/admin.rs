//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! is alive) and `/readyz` (the bus and the database answer). Keep it off
//! the public network: it is unauthenticated.
//!
//! Readiness is the bus and the database only. `/readyz` also shows each
//! integration's last provider API check, for information: a provider that
//! is down does not make kvitto unready, because its webhooks are still
//! accepted and queued durably, and the pipeline retries them until the
//! provider answers. Taking kvitto out of rotation would instead make
//! every provider's deliveries fail. No secret is ever shown.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::bus::Bus;
use crate::health::HealthBoard;
use crate::store::Store;

/// How long a readiness probe waits for each dependency.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct AdminState {
    pub metrics: PrometheusHandle,
    pub bus: Bus,
    pub store: Store,
    /// The integration health monitor's latest checks.
    pub health: HealthBoard,
}

pub fn bind(
    listen: &str,
    state: Arc<AdminState>,
) -> std::io::Result<(Server, ServerHandle, std::net::SocketAddr)> {
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    // Stopped last by `app::serve`'s shutdown, not by actix on SIGTERM.
    .disable_signals()
    .bind(listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    let server = server.run();
    let handle = server.handle();
    Ok((server, handle, addr))
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    let bus = match tokio::time::timeout(READY_CHECK_TIMEOUT, state.bus.check()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_string(),
    };
    let database = match tokio::time::timeout(READY_CHECK_TIMEOUT, state.store.check()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_string(),
    };
    let ready = bus == "ok" && database == "ok";
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "bus": bus,
        "database": database,
        "integrations": state.health.to_json(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
