//! Ingress: the webhook listener.
//!
//! `POST /webhooks/{provider}/{integration}`. The signature is checked on the
//! raw bytes, the body is given a stable kvitto event id and written to the
//! provider's topic, and only when the bus has confirmed that write does the
//! provider get its 200. Every other answer is decided in [`error`].

pub mod error;
mod handler;

use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};

pub use self::error::IngressError;
pub use self::handler::{BodyError, read_body};
use crate::bus::Bus;
use crate::config::Config;
use crate::telemetry::SignatureRefused;

/// What the webhook handlers share.
pub struct IngressState {
    pub config: Config,
    pub bus: Bus,
    /// One permit per webhook being read or written.
    pub inflight: tokio::sync::Semaphore,
}

impl IngressState {
    pub fn new(config: Config, bus: Bus) -> Self {
        let inflight = tokio::sync::Semaphore::new(config.server.max_inflight_webhooks);
        for integration in &config.integrations {
            // The label hides ids that are secret path tokens (Swish, Klarna).
            let label = crate::health::integration_label(integration);
            SignatureRefused::register(integration.provider, &label);
        }
        IngressState {
            config,
            bus,
            inflight,
        }
    }
}

/// Binds the webhook listener and returns the server (to be awaited or
/// spawned), its handle and the bound address.
pub fn bind(
    state: Arc<IngressState>,
    api: Arc<crate::settlement::http::ApiState>,
) -> std::io::Result<(Server, ServerHandle, std::net::SocketAddr)> {
    let listen = state.config.server.webhook_listen.clone();
    let workers = match state.config.server.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let shutdown_secs = state.config.server.shutdown_timeout_secs;
    let request_timeout = std::time::Duration::from_millis(state.config.server.request_timeout_ms);
    let max_body_bytes = state.config.server.max_body_bytes;
    let data = web::Data::from(state);
    let api = web::Data::from(api);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(api.clone())
            .app_data(web::PayloadConfig::new(max_body_bytes))
            .route(
                "/webhooks/{provider}/{integration}",
                web::post().to(handler::receive),
            )
            .configure(crate::settlement::http::routes)
    })
    .workers(workers)
    .client_request_timeout(request_timeout)
    .shutdown_timeout(shutdown_secs)
    // SIGTERM belongs to `app::serve`, which stops this listener in its
    // place in the shutdown order; actix's own handler would stop the whole
    // runtime at once.
    .disable_signals()
    .bind(&listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    let server = server.run();
    let handle = server.handle();
    Ok((server, handle, addr))
}
