//! The `kvitto` binary's own commands, run as a user would.

use std::process::Command;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn kvitto(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kvitto"))
        .args(args)
        .output()
        .expect("kvitto runs");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The reference: HMAC-SHA256 computed here, independently of kvitto.
fn hmac(key: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn body_file(dir: &tempfile::TempDir, body: &str) -> String {
    let path = dir.path().join("body.json");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn sign_prints_only_each_providers_header_value() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"id":"evt_1","note":"kanelbulle åäö 🥐"}"#;
    let file = body_file(&dir, body);
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);

    let url = "https://kvitto.example.se/webhooks/square/shop";
    let (ok, out, _) = kvitto(&[
        "sign",
        "--provider",
        "square",
        "--secret",
        "k1",
        "--url",
        url,
        "--body-file",
        &file,
    ]);
    assert!(ok);
    assert_eq!(
        out,
        format!("{}\n", b64(hmac("k1", format!("{url}{body}").as_bytes())))
    );

    let (ok, out, _) = kvitto(&[
        "sign",
        "--provider",
        "stripe",
        "--secret",
        "whsec_k2",
        "--timestamp",
        "1767225600",
        "--body-file",
        &file,
    ]);
    assert!(ok);
    let expected = hex::encode(hmac("whsec_k2", format!("1767225600.{body}").as_bytes()));
    assert_eq!(out, format!("t=1767225600,v1={expected}\n"));

    let (ok, out, _) = kvitto(&[
        "sign",
        "--provider",
        "shopify",
        "--secret",
        "k3",
        "--body-file",
        &file,
    ]);
    assert!(ok);
    assert_eq!(out, format!("{}\n", b64(hmac("k3", body.as_bytes()))));

    let payload = r#"{"purchaseUUID1":"p-1","amount":3800}"#;
    let envelope = serde_json::json!({
        "organizationUuid": "org", "messageUuid": "m-1", "eventName": "PurchaseCreated",
        "messageId": "1", "payload": payload, "timestamp": "2026-03-01T10:00:00.000Z"
    })
    .to_string();
    let file = body_file(&dir, &envelope);
    let (ok, out, _) = kvitto(&[
        "sign",
        "--provider",
        "zettle",
        "--secret",
        "k4",
        "--body-file",
        &file,
    ]);
    assert!(ok);
    let expected = hex::encode(hmac(
        "k4",
        format!("2026-03-01T10:00:00.000Z.{payload}").as_bytes(),
    ));
    assert_eq!(out, format!("{expected}\n"));
}

#[test]
fn sign_refuses_unsigned_providers_and_missing_inputs_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = body_file(&dir, "{}");
    let (ok, out, err) = kvitto(&[
        "sign",
        "--provider",
        "swish",
        "--secret",
        "x",
        "--body-file",
        &file,
    ]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("not signed"), "{err}");
    let (ok, _, err) = kvitto(&[
        "sign",
        "--provider",
        "square",
        "--secret",
        "x",
        "--body-file",
        &file,
    ]);
    assert!(!ok);
    assert!(err.contains("--url"), "{err}");
}

#[test]
fn check_config_accepts_the_shipped_config_and_names_an_unknown_key() {
    let (ok, out, err) = kvitto(&["check-config"]);
    assert!(ok, "{err}");
    assert!(out.contains("configuration is valid"));
    assert!(
        out.contains("integration demo-square (square, api)"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nwebhook_listn = \"127.0.0.1:1\"\n").unwrap();
    let (ok, _, err) = kvitto(&["--config", path.to_str().unwrap(), "check-config"]);
    assert!(!ok);
    assert!(err.contains("webhook_listn"), "{err}");
}

/// The shipped demo config, private to one test: database, bus and
/// listeners of its own, and every provider API at the sandbox on `sandbox`.
fn doctor_config(dir: &tempfile::TempDir, sandbox: std::net::SocketAddr) -> String {
    let text = std::fs::read_to_string("config/kvitto.toml").unwrap();
    let path = dir.path();
    text.replace("http://127.0.0.1:8090", &format!("http://{sandbox}"))
        .replace(
            "sqlite://data/kvitto.sqlite",
            &format!("sqlite://{}/kvitto.sqlite", path.display()),
        )
        .replace(
            "data/bus.sqlite",
            &path.join("bus.sqlite").display().to_string(),
        )
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9464", "127.0.0.1:0")
}

/// Runs kvitto without blocking the runtime the sandbox answers on.
async fn kvitto_async(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvitto"))
        .args(args)
        .output()
        .await
        .expect("kvitto runs");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Starts the sandbox with the demo credentials and writes a config that
/// uses it, after `tweak`. Returns the config file's path.
async fn doctor_setup(dir: &tempfile::TempDir, tweak: impl FnOnce(String) -> String) -> String {
    let demo = std::fs::read_to_string("config/kvitto.toml").unwrap();
    let state = std::sync::Arc::new(kvitto::sandbox::SandboxState::new(
        kvitto::config::Config::from_toml(&demo).unwrap(),
    ));
    let (_handle, address) = kvitto::sandbox::server::start(state, "127.0.0.1:0")
        .await
        .expect("sandbox starts");
    let path = dir.path().join("kvitto.toml");
    std::fs::write(&path, tweak(doctor_config(dir, address))).unwrap();
    path.display().to_string()
}

/// Every credential, signing secret and unsigned provider's path token in
/// the demo config.
fn demo_secrets() -> Vec<String> {
    let text = std::fs::read_to_string("config/kvitto.toml").unwrap();
    let config = kvitto::config::Config::from_toml(&text).unwrap();
    let mut secrets = Vec::new();
    for integration in config.integrations {
        if integration.signing_secrets.is_empty() {
            secrets.push(integration.id);
        }
        secrets.extend(integration.signing_secrets);
        secrets.extend(integration.api_token);
        secrets.extend(integration.api_password);
    }
    secrets
}

#[actix_rt::test]
async fn doctor_passes_every_check_on_a_healthy_sandbox_setup() {
    let dir = tempfile::tempdir().unwrap();
    let config = doctor_setup(&dir, |text| text).await;
    let (ok, _, err) = kvitto_async(&["--config", &config, "migrate"]).await;
    assert!(ok, "{err}");

    let (ok, out, err) = kvitto_async(&["--config", &config, "doctor"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.starts_with("ok    config: valid"), "{out}");
    assert!(out.contains("ok    database "), "{out}");
    assert!(out.contains("ok    bus (embedded"), "{out}");
    assert!(
        out.contains("ok    integration square/demo-square (kafe-linnea/sodermalm): provider API reachable, credentials accepted"),
        "{out}"
    );
    assert_eq!(out.matches("credentials accepted").count(), 7, "{out}");
    assert!(out.contains("ok    listener server.admin_listen"), "{out}");
    assert!(
        out.contains("ok    payout rails: stripe and swish ready"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    for secret in demo_secrets() {
        assert!(!out.contains(&secret), "{secret} printed:\n{out}");
    }
}

#[actix_rt::test]
async fn doctor_fails_naming_the_integration_whose_token_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = "sk_test_revoked_key_9f8e7d";
    let config = doctor_setup(&dir, |text| {
        text.replace("sk_test_demo_stripe_secret_key", wrong)
    })
    .await;
    let (ok, _, err) = kvitto_async(&["--config", &config, "migrate"]).await;
    assert!(ok, "{err}");

    let (ok, out, _) = kvitto_async(&["--config", &config, "doctor"]).await;
    assert!(!ok, "a rejected token fails the doctor:\n{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL  integration stripe/demo-stripe"))
        .unwrap_or_else(|| panic!("no line for the stripe integration:\n{out}"));
    assert!(line.contains("credentials_rejected"), "{line}");
    assert!(line.contains("check the integration's api_token"), "{line}");
    assert_eq!(out.matches("FAIL").count(), 1, "{out}");
    assert!(out.ends_with("1 of 13 checks failed\n"), "{out}");
    assert!(!out.contains(wrong), "{out}");
    for secret in demo_secrets() {
        assert!(!out.contains(&secret), "{secret} printed:\n{out}");
    }
}

#[actix_rt::test]
async fn doctor_reports_pending_migrations_and_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = doctor_setup(&dir, |text| text).await;
    let (ok, out, _) = kvitto_async(&["--config", &config, "doctor"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("kvitto migrate"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[processing]\nintegration_check_interval_secs = 0\n").unwrap();
    let (ok, out, _) = kvitto_async(&["--config", bad.to_str().unwrap(), "doctor"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.starts_with("FAIL  config: processing.integration_check_interval_secs"),
        "{out}"
    );
}

#[actix_rt::test]
async fn doctor_names_a_payout_rail_it_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let config = doctor_setup(&dir, |text| {
        text.replace(
            "config/sandbox/swish-payout-signing-key.pem",
            "/nonexistent/swish-signing.pem",
        )
    })
    .await;
    let (_, out, _) = kvitto_async(&["--config", &config, "doctor"]).await;
    let line = out
        .lines()
        .find(|l| l.contains("payout rails"))
        .unwrap_or_else(|| panic!("no payout rails check:\n{out}"));
    assert!(line.starts_with("FAIL"), "{out}");
    assert!(line.contains("/nonexistent/swish-signing.pem"), "{line}");
}
