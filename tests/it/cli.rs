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
