//! The sandbox's HTTP server: every provider's lookup API on one listener,
//! each under its own `/{provider}` scope, plus `GET /healthz`.
//!
//! The server shares one [`SandboxState`] with the sender, so a purchase
//! inserted before its webhook is sent is already there when kvitto asks.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::providers;
use crate::sandbox::SandboxState;

/// Worker threads: the sandbox answers lookups, it is not a load target.
const WORKERS: usize = 2;

/// Binds `listen` (port 0 picks a free port) and serves until the returned
/// handle is stopped. The server runs as a task on the current runtime.
pub async fn start(
    state: Arc<SandboxState>,
    listen: &str,
) -> std::io::Result<(ServerHandle, SocketAddr)> {
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/healthz", web::get().to(healthz))
            .configure(provider_routes)
    })
    .workers(WORKERS)
    .disable_signals()
    .bind(listen)?;

    let address = server.addrs().first().copied().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "sandbox bound no address",
        )
    })?;
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    tracing::info!(%address, "sandbox serving provider apis");
    Ok((handle, address))
}

/// Every provider's lookup API.
pub fn provider_routes(cfg: &mut web::ServiceConfig) {
    providers::square::sandbox::routes(cfg);
    providers::stripe::sandbox::routes(cfg);
    providers::shopify::sandbox::routes(cfg);
    providers::zettle::sandbox::routes(cfg);
    providers::swish::sandbox::routes(cfg);
    providers::klarna::sandbox::routes(cfg);
    providers::generic::sandbox::routes(cfg);
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::generic::fixtures;

    #[actix_rt::test]
    async fn sandbox_answers_health_on_a_free_port() {
        let state = Arc::new(SandboxState::new(fixtures::config("http://unused")));
        let (handle, address) = start(state, "127.0.0.1:0").await.unwrap();
        assert_ne!(address.port(), 0);

        let answer = reqwest::get(format!("http://{address}/healthz"))
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "ok");
        handle.stop(true).await;
    }
}
