//! The README's walk through the money path, as a new user runs it: the
//! real binary serving, `kvitto simulate` playing the providers and the
//! feedback service against it, then `kvitto ledger` and `kvitto
//! settlements` reading what came of it.

use std::process::Output;

use crate::crash::{spawn_kvitto, wait_ready};
use crate::support::{Runtime, TestEnv, free_port};

async fn kvitto(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
        ..
    } = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvitto"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("KVITTO_LOG__LEVEL", "warn")
        .output()
        .await
        .expect("kvitto runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

async fn simulated_purchases_and_feedback_end_paid_and_balanced(runtime: Runtime) {
    let Some(mut env) = TestEnv::new(runtime).await else {
        return;
    };
    let webhooks = format!("127.0.0.1:{}", free_port());
    let sandbox: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    env.config.server.webhook_listen = webhooks.clone();
    env.config.server.admin_listen = format!("127.0.0.1:{}", free_port());
    env.config.sandbox.target_url = format!("http://{webhooks}");
    env.use_sandbox(sandbox);
    if let Some(swish) = &mut env.config.settlement.swish {
        swish.callback_url = format!(
            "http://{webhooks}/callbacks/swish/payouts/{}",
            swish.callback_token
        );
    }
    assert!(
        !env.config.settlement.api_keys.is_empty(),
        "the demo config has the feedback service's keys"
    );
    let config = env.dir.path().join("kvitto.toml");
    std::fs::write(&config, toml::to_string(&env.config).unwrap()).unwrap();

    let _daemon = spawn_kvitto(&config);
    wait_ready(&reqwest::Client::new(), &env.config.server.admin_listen).await;

    let (ok, out) = kvitto(
        &config,
        &[
            "simulate",
            "--count",
            "40",
            "--duplicates",
            "0.1",
            "--failing-payouts",
            "0.2",
        ],
    )
    .await;
    assert!(ok, "simulate failed:\n{out}");
    assert!(
        out.contains("ok: kvitto decided every feedback and settled every reward"),
        "{out}"
    );
    let paid_line = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("paid"))
        .unwrap_or_else(|| panic!("no rewards paid:\n{out}"));
    let paid: usize = paid_line
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(paid > 0, "{out}");
    // The refused destinations end failed, their budget given back.
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("failed")),
        "no payout failed:\n{out}"
    );

    let (ok, ledger) = kvitto(&config, &["ledger"]).await;
    assert!(ok, "{ledger}");
    assert!(ledger.contains("ledger balanced"), "{ledger}");
    assert!(ledger.contains("clearing:"), "{ledger}");

    let (ok, listing) = kvitto(&config, &["settlements"]).await;
    assert!(ok, "{listing}");
    let listed_paid = listing
        .lines()
        .find_map(|l| l.strip_prefix("settlements paid"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok());
    assert_eq!(listed_paid, Some(paid), "{listing}");

    // The events follow the rows through the outbox, a tick or so later.
    let mut paid_events = 0;
    let mut events = String::new();
    for _ in 0..40 {
        let (ok, out) = kvitto(&config, &["settlements", "--events", "--limit", "1000"]).await;
        assert!(ok, "{out}");
        paid_events = out
            .lines()
            .filter(|l| l.split_whitespace().nth(3) == Some("paid"))
            .count();
        events = out;
        if paid_events == paid {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        paid_events, paid,
        "one paid event per paid reward:\n{events}"
    );
}
on_both_runtimes!(simulated_purchases_and_feedback_end_paid_and_balanced);
