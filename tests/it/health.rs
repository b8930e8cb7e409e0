//! The integration health monitor against the sandbox: good credentials are
//! up, a wrong token and a closed port are down with their reason, `/readyz`
//! shows every check without making kvitto unready, and a provider that
//! recovers flips back to up.

use std::net::TcpListener;
use std::sync::Arc;

use kvitto::app::{self, Running};
use kvitto::canonical::VerificationMode;
use kvitto::config::IntegrationConfig;
use kvitto::providers::ProviderKind;
use kvitto::sandbox::{Fault, SandboxState};
use serde_json::Value;

use crate::support::{Runtime, TestEnv, eventually};

const WRONG_SQUARE_TOKEN: &str = "not-the-square-access-token";

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn demo(env: &TestEnv, provider: ProviderKind) -> IntegrationConfig {
    env.config
        .integrations
        .iter()
        .find(|i| i.provider == provider)
        .unwrap()
        .clone()
}

async fn get_text(url: String) -> (reqwest::StatusCode, String) {
    let answer = reqwest::get(url).await.expect("admin answers");
    let status = answer.status();
    (status, answer.text().await.expect("body"))
}

/// Waits until `/metrics` has the line `series value`.
async fn metric_reads(kvitto: &Running, series: &str, value: &str) {
    let url = format!("http://{}/metrics", kvitto.admin_addr);
    let line = format!("{series} {value}");
    eventually(&line, || async {
        let (_, text) = get_text(url.clone()).await;
        text.lines().any(|l| l == line).then_some(())
    })
    .await;
}

on_both_runtimes!(integration_checks_are_exported_and_shown_without_affecting_readiness);
async fn integration_checks_are_exported_and_shown_without_affecting_readiness(runtime: Runtime) {
    let Some(mut env) = TestEnv::new(runtime).await else {
        return;
    };
    // The sandbox knows the demo credentials only.
    let sandbox = Arc::new(SandboxState::new(env.config.clone()));
    let (_handle, sandbox_addr) = kvitto::sandbox::server::start(sandbox.clone(), "127.0.0.1:0")
        .await
        .expect("sandbox starts");
    env.use_sandbox(sandbox_addr);
    env.config.processing.integration_check_interval_secs = 1;

    let mut wrong_token = demo(&env, ProviderKind::Square);
    wrong_token.id = "square-wrong-token".into();
    wrong_token.api_token = Some(WRONG_SQUARE_TOKEN.into());
    let mut closed = demo(&env, ProviderKind::Stripe);
    closed.id = "stripe-closed-port".into();
    closed.api_base_url = Some(format!("http://127.0.0.1:{}/stripe", closed_port()));
    env.config.integrations.extend([wrong_token, closed]);
    let shopify = env
        .config
        .integrations
        .iter_mut()
        .find(|i| i.provider == ProviderKind::Shopify)
        .unwrap();
    shopify.verification = VerificationMode::SignatureOnly;

    let kvitto = app::start(env.config.clone()).await.expect("kvitto starts");
    let up = |integration: &str, provider: &str| {
        format!(r#"kvitto_integration_up{{provider="{provider}",integration="{integration}"}}"#)
    };
    metric_reads(&kvitto, &up("demo-square", "square"), "1").await;
    metric_reads(&kvitto, &up("square-wrong-token", "square"), "0").await;
    metric_reads(&kvitto, &up("stripe-closed-port", "stripe"), "0").await;
    metric_reads(&kvitto, &up("demo-generic", "generic"), "1").await;

    let (status, body) = get_text(format!("http://{}/readyz", kvitto.admin_addr)).await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "down integrations leave kvitto ready: {body}"
    );
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    let integrations = &ready["integrations"];
    assert_eq!(integrations["square/demo-square"]["up"], true, "{body}");
    assert!(
        integrations["square/demo-square"]["checked_at"].is_string(),
        "{body}"
    );
    assert!(
        integrations["square/demo-square"]["error"].is_null(),
        "{body}"
    );
    let rejected = &integrations["square/square-wrong-token"];
    assert_eq!(rejected["up"], false, "{body}");
    assert_eq!(rejected["reason"], "credentials_rejected", "{body}");
    assert_eq!(
        integrations["stripe/stripe-closed-port"]["reason"], "unreachable",
        "{body}"
    );
    assert!(
        integrations.get("shopify/demo-shopify").is_none(),
        "signature-only integrations are not probed: {body}"
    );
    // Neither credentials nor the unsigned providers' path tokens show.
    for integration in &env.config.integrations {
        let secrets = [&integration.api_token, &integration.api_password];
        for secret in secrets.into_iter().flatten() {
            assert!(!body.contains(secret.as_str()), "{body}");
        }
        if matches!(
            integration.provider,
            ProviderKind::Swish | ProviderKind::Klarna
        ) {
            assert!(!body.contains(&integration.id), "{body}");
        }
    }

    let (_, metrics) = get_text(format!("http://{}/metrics", kvitto.admin_addr)).await;
    assert!(
        !metrics.contains(r#"kvitto_integration_up{provider="shopify""#),
        "{metrics}"
    );
    let checked_at = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"kvitto_integration_check_timestamp_seconds{provider="square",integration="demo-square"}"#,
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("check timestamp exported");
    let started = (chrono::Utc::now() - chrono::Duration::minutes(5)).timestamp() as f64;
    assert!(checked_at > started, "{checked_at}");

    // A provider failing and recovering flips the gauge both ways.
    sandbox.set_fault(ProviderKind::Generic, Some(Fault::ServerError));
    metric_reads(&kvitto, &up("demo-generic", "generic"), "0").await;
    sandbox.set_fault(ProviderKind::Generic, None);
    metric_reads(&kvitto, &up("demo-generic", "generic"), "1").await;
    kvitto.shutdown().await;
}
