//! Every provider's probe against the sandbox, which answers like the real
//! APIs: the demo credentials are accepted, others refused.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::sandbox::testing;
use crate::sandbox::{Fault, server};

/// The demo config with every integration's API pointed at `address`.
fn pointed_at(address: SocketAddr) -> Config {
    let mut config = testing::demo_config();
    for integration in &mut config.integrations {
        let base = format!("http://{address}/{}", integration.provider);
        integration.api_base_url = Some(base.clone());
        integration.oauth_base_url = integration.oauth_base_url.as_ref().map(|_| base);
    }
    config
}

/// The sandbox with every provider's routes, and the demo config aimed at it.
fn sandbox() -> (actix_web::web::Data<crate::sandbox::SandboxState>, Config) {
    let (state, address) = testing::serve(server::provider_routes, |_| testing::demo_config());
    (state, pointed_at(address))
}

/// Replaces whichever credential the provider checks with a wrong one.
fn with_wrong_credentials(integration: &mut IntegrationConfig) {
    match integration.provider {
        ProviderKind::Klarna => integration.api_password = Some("wrong-password".into()),
        _ => integration.api_token = Some("wrong-token".into()),
    }
}

#[actix_rt::test]
async fn every_demo_integration_is_up_with_the_sandbox_credentials() {
    let (state, config) = sandbox();
    let client = testing::fast_client();
    for integration in &config.integrations {
        let result = probe(&client, integration).await;
        assert_eq!(result, Ok(()), "{}", integration.provider);
    }
    // Probes are not lookups: the simulator's count of looked-up purchases
    // must not move.
    assert_eq!(state.looked_up_count(), 0);
    for provider in [ProviderKind::Square, ProviderKind::Klarna] {
        assert_eq!(state.probes_of(provider), 1, "{provider}");
    }
}

#[actix_rt::test]
async fn wrong_credentials_are_rejected_by_every_provider_that_has_them() {
    let (_state, config) = sandbox();
    let client = testing::fast_client();
    // Swish authenticates by the TLS client certificate, which the plain
    // HTTP sandbox cannot check.
    for integration in config
        .integrations
        .iter()
        .filter(|i| i.provider != ProviderKind::Swish)
    {
        let mut integration = integration.clone();
        with_wrong_credentials(&mut integration);
        let failure = probe(&client, &integration).await.unwrap_err();
        assert_eq!(
            failure.reason,
            DownReason::CredentialsRejected,
            "{}: {failure}",
            integration.provider
        );
        assert!(!failure.detail.contains("wrong-"), "{failure}");
    }
}

#[actix_rt::test]
async fn closed_port_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut integration = testing::integration_of(&testing::demo_config(), ProviderKind::Stripe);
    integration.api_base_url = Some(format!("http://127.0.0.1:{port}/stripe"));
    let failure = probe(&testing::fast_client(), &integration)
        .await
        .unwrap_err();
    assert_eq!(failure.reason, DownReason::Unreachable, "{failure}");
}

#[actix_rt::test]
async fn provider_server_error_is_an_unexpected_status() {
    let (state, config) = sandbox();
    state.set_fault(ProviderKind::Generic, Some(Fault::ServerError));
    let integration = testing::integration_of(&config, ProviderKind::Generic);
    let failure = probe(&testing::fast_client(), &integration)
        .await
        .unwrap_err();
    assert_eq!(failure.reason, DownReason::UnexpectedStatus, "{failure}");
    assert!(failure.detail.contains("500"), "{failure}");
}

#[actix_rt::test]
async fn missing_credentials_are_a_misconfiguration() {
    let (_state, config) = sandbox();
    let mut integration = testing::integration_of(&config, ProviderKind::Square);
    integration.api_token = None;
    let failure = probe(&testing::fast_client(), &integration)
        .await
        .unwrap_err();
    assert_eq!(failure.reason, DownReason::Misconfigured, "{failure}");
}

#[test]
fn signature_only_integrations_are_not_probed_but_unsigned_ones_always_are() {
    let config = testing::demo_config();
    let mut square = testing::integration_of(&config, ProviderKind::Square);
    assert!(is_probed(&square));
    square.verification = VerificationMode::SignatureOnly;
    assert!(!is_probed(&square));
    let mut klarna = testing::integration_of(&config, ProviderKind::Klarna);
    klarna.verification = VerificationMode::SignatureOnly;
    assert!(is_probed(&klarna));
}

#[test]
fn unsigned_providers_path_tokens_never_appear_in_labels() {
    let config = testing::demo_config();
    let square = testing::integration_of(&config, ProviderKind::Square);
    assert_eq!(integration_label(&square), "demo-square");
    let swish = testing::integration_of(&config, ProviderKind::Swish);
    let label = integration_label(&swish);
    assert!(label.starts_with("swish-.."), "{label}");
    assert!(!label.contains(&swish.id[6..12]), "{label}");
    let mut other = swish.clone();
    other.id.push('x');
    assert_ne!(integration_label(&other), label);
}

#[actix_rt::test]
async fn monitor_fills_the_board_and_a_hung_provider_holds_back_no_other() {
    let (state, mut config) = sandbox();
    config.processing.integration_check_interval_secs = 1;
    config.processing.api_timeout_ms = 300;
    state.set_fault(
        ProviderKind::Stripe,
        Some(Fault::Hang(Duration::from_secs(30))),
    );
    let monitor = HealthMonitor::start(&config).unwrap();
    let board = monitor.board();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let snapshot = loop {
        let snapshot = board.snapshot();
        if snapshot.iter().all(|h| h.up.is_some()) {
            break snapshot;
        }
        assert!(tokio::time::Instant::now() < deadline, "{snapshot:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(snapshot.len(), config.integrations.len());
    for health in &snapshot {
        let expected_up = health.provider != ProviderKind::Stripe;
        assert_eq!(health.up, Some(expected_up), "{health:?}");
    }
    let stripe = snapshot
        .iter()
        .find(|h| h.provider == ProviderKind::Stripe)
        .unwrap();
    assert_eq!(
        stripe.failure.as_ref().map(|f| f.reason),
        Some(DownReason::Timeout)
    );
    let json = board.to_json();
    assert_eq!(json["stripe/demo-stripe"]["reason"], "timeout");
    assert_eq!(json["square/demo-square"]["up"], true);
    assert!(json["square/demo-square"]["error"].is_null());
    monitor.stop().await;
}

/// Log lines written while `body` runs, at INFO and above.
fn logged(body: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, body);
    let bytes = lines.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn only_changes_of_state_are_logged_warn_down_and_info_up() {
    use crate::telemetry::{IntegrationChecked, emit};

    let failure = ProbeFailure::new(DownReason::CredentialsRejected, "provider answered 401");
    let check = |was_up: Option<bool>, failure: Option<&ProbeFailure>| {
        emit(IntegrationChecked {
            provider: ProviderKind::Square,
            integration: "demo-square",
            was_up,
            failure,
            checked_at: chrono::Utc::now(),
        })
    };
    let log = logged(|| {
        check(None, None);
        check(Some(true), None);
        check(Some(true), Some(&failure));
        check(Some(false), Some(&failure));
        check(Some(false), Some(&failure));
        check(Some(false), None);
        check(Some(true), None);
    });
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("WARN"), "{log}");
    assert!(lines[0].contains("integration api check failed"), "{log}");
    assert!(lines[0].contains("credentials_rejected"), "{log}");
    assert!(lines[1].contains("INFO"), "{log}");
    assert!(lines[1].contains("integration api is up again"), "{log}");
}
