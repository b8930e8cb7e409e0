//! The monitoring files against a real Prometheus scraping a real kvitto:
//! simulated traffic from every provider (duplicates, forged signatures, a
//! dead letter) and rewards for some of the purchases, paid through the
//! sandbox's payout rails (with a duplicate feedback, one that earns
//! nothing and a spell of Swish payout errors); then, through Prometheus's
//! HTTP API, every rule group loads and evaluates cleanly, every dashboard,
//! alert and recording query runs and finds the metrics and labels it
//! names, the panels that should show data do, and the traffic provokes the
//! alerts it should and no others.
//!
//! Problems are collected and reported together, so one run names every
//! missing metric rather than the first.

mod promql;
mod rewards;
mod server;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use kvitto::providers::ProviderKind;
use kvitto::sandbox::send::{self, SendOptions};
use kvitto::sandbox::{Fault, WebhookKind};
use reqwest::StatusCode;
use serde_json::Value;

use self::server::Prometheus;
use crate::rules::{DASHBOARD, RULE_FILES, dashboard_panels, load_dashboard, tool_or_skip};
use crate::settlement::support::Money;
use crate::support::{Harness, Runtime, eventually};

/// What `$__rate_interval` stands for: long enough that the whole run's
/// traffic is inside the window when the queries run.
const RATE_INTERVAL: &str = "2m";
/// Scrapes Prometheus must have made after the traffic before checking.
const SCRAPES_AFTER_TRAFFIC: f64 = 4.0;
/// How long to wait before looking again at a quiet alert seen active.
const QUIET_RECHECK: std::time::Duration = std::time::Duration::from_secs(3);
/// Forged webhooks for the generic integration: enough, and a large enough
/// share of its traffic, for the signature-failure alert.
const FORGED_FIRST: u64 = 2;
const FORGED_SECOND: u64 = 12;

/// Dashboard panels that must show a finite value under the traffic.
const PANELS_WITH_DATA: &[&str] = &[
    "Webhooks accepted",
    "Webhooks refused with 503/408",
    "End-to-end p99",
    "Dead letters since start",
    "Consumer lag",
    "Version",
    "Webhooks by provider and outcome",
    "Webhooks refused",
    "Signature failures by integration",
    "Ack latency",
    "Ack latency p99 by provider",
    "In flight and overload",
    "Events processed by outcome",
    "Deduplication hits",
    "Stage latency p99",
    "End-to-end latency",
    "Consumer lag by partition",
    "Dead letters by reason",
    "API calls by status",
    "API latency p99",
    "Integration up",
    "Bus writes",
    "Bus write latency p99",
    "CPU",
    "Memory",
    "File descriptors",
    "Threads and uptime",
    "Ledger balanced",
    "Oldest unfinished settlement",
    "Feedback received by outcome",
    "Feedback match outcomes",
    "Settlements by rail and state",
    "Rewards paid per hour",
    "Purchase to payout",
    "Rail calls by outcome",
    "Rail call error share",
    "Rail call latency p99",
];
/// Alerts the traffic provokes: pending or firing once it is scraped.
const ALERTS_PROVOKED: &[&str] = &[
    "KvittoDeadLetters",
    "KvittoSignatureFailures",
    "KvittoPayoutRailFailing",
];
/// Alerts a healthy kvitto under this traffic must not show at all.
const ALERTS_QUIET: &[&str] = &[
    "KvittoDown",
    "KvittoNoEventsProcessed",
    "KvittoIngestErrors",
    "KvittoActorRestartLoop",
    "KvittoEventStuckRetrying",
    "KvittoLedgerUnbalanced",
    "KvittoSettlementsStuck",
];

on_both_runtimes!(prometheus_finds_every_metric_the_dashboard_and_rules_use);
async fn prometheus_finds_every_metric_the_dashboard_and_rules_use(runtime: Runtime) {
    let Some(binary) = tool_or_skip("prometheus") else {
        return;
    };
    let Some(money) = Money::start(runtime, |config| config.processing.max_attempts = 2).await
    else {
        return;
    };
    let h = &money.harness;
    let prometheus = Prometheus::start(&binary, h.kvitto.admin_addr).await;
    eventually("the first scrape of kvitto", || async {
        let up = prometheus.query(r#"up{job="kvitto"} == 1"#).await.ok()?;
        (!up.is_empty()).then_some(())
    })
    .await;

    // Two waves, each scraped before the next: a counter series is born at
    // its first increment, and rate() and increase() only see growth that
    // Prometheus watched happen.
    let mut purchases = send_wave(h, 1, 14, 0.0, FORGED_FIRST).await;
    wait_until_processed(h, purchases, None).await;
    purchases += rewards::reward_wave(&money, 1).await;
    purchases += send_trouble(h).await;
    purchases += rewards::swish_outage(&money, &prometheus).await;
    wait_until_processed(h, purchases, None).await;
    prometheus.wait_for_scrapes(2.0).await;
    purchases += send_wave(h, 2, 28, 0.1, FORGED_SECOND).await;
    send_undecodable(h).await;
    let dead_letter = r#"kvitto_deadletter_total{provider="square",reason="undecodable"} 1"#;
    wait_until_processed(h, purchases, Some(dead_letter)).await;
    purchases += rewards::reward_wave(&money, 2).await;
    wait_until_processed(h, purchases, None).await;
    prometheus.wait_for_scrapes(SCRAPES_AFTER_TRAFFIC).await;

    let mut problems = Vec::new();
    let rules = prometheus.rules_when_evaluated().await;
    check_rule_groups(&rules, &mut problems);
    let expressions = expressions(&rules);
    let mut series = SeriesCache::default();
    for (name, expr) in &expressions {
        check_expression(&prometheus, &mut series, name, expr, &mut problems).await;
    }
    check_panels_with_data(&prometheus, &mut problems).await;
    check_alerts(&prometheus, &mut problems).await;
    assert!(
        problems.is_empty(),
        "{} problem(s) with the dashboard and rules:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    drop(prometheus);
    money.shutdown().await;
}

/// Sends simulator traffic for every provider plus `forged` generic
/// webhooks with a broken signature; returns how many purchases should be
/// stored.
async fn send_wave(h: &Harness, seed: u64, count: usize, bad: f64, forged: u64) -> i64 {
    let options = SendOptions {
        count,
        rate_per_sec: 0.0,
        duplicate_ratio: 0.3,
        bad_signature_ratio: bad,
        seed,
        ..SendOptions::default()
    };
    let target = format!("http://{}", h.kvitto.webhook_addr);
    let report = send::run(&h.sandbox, &target, &options)
        .await
        .expect("send");
    assert_eq!(report.unexpected_total(), 0, "{report}");
    for n in 0..forged {
        let purchase = h.purchase(ProviderKind::Generic, 1_000 * seed + n);
        let mut webhook = h.webhook(&purchase, WebhookKind::Created);
        assert!(send::corrupt_signature(&mut webhook));
        assert_eq!(h.send(&webhook).await, StatusCode::UNAUTHORIZED);
    }
    i64::try_from(report.purchases.len()).expect("count")
}

/// What a normal day also brings, so the panels and alerts about it have
/// series to find: a provider API answering 500 for a while (API retries, a
/// worker retrying an event), a provider disagreeing on an amount (a
/// verification mismatch) and, with fail points compiled in, an event that
/// makes processing panic (actor restarts, then a dead letter). Returns how
/// many transactions it adds.
async fn send_trouble(h: &Harness) -> i64 {
    h.sandbox
        .set_fault(ProviderKind::Zettle, Some(Fault::ServerError));
    let purchase = h.purchase(ProviderKind::Zettle, 900);
    assert_eq!(
        h.send(&h.webhook(&purchase, WebhookKind::Created)).await,
        StatusCode::OK
    );
    wait_for_metric(h, r#"kvitto_pipeline_event_retrying{provider="zettle"} 1"#).await;
    h.sandbox.set_fault(ProviderKind::Zettle, None);

    let wrong = Fault::WrongAmount { delta_minor: 500 };
    h.sandbox.set_fault(ProviderKind::Stripe, Some(wrong));
    let purchase = h.purchase(ProviderKind::Stripe, 901);
    assert_eq!(
        h.send(&h.webhook(&purchase, WebhookKind::Created)).await,
        StatusCode::OK
    );
    wait_for_metric(
        h,
        r#"kvitto_events_processed_total{provider="stripe",outcome="rejected"} 1"#,
    )
    .await;
    h.sandbox.set_fault(ProviderKind::Stripe, None);

    #[cfg(feature = "failpoints")]
    {
        fail::cfg("process-event", "panic").expect("fail point");
        let poison = crate::support::generic_webhook(h, "poison-9", "txn-poison-9", "10.00", "");
        assert_eq!(h.send(&poison).await, StatusCode::OK);
        let line = r#"kvitto_deadletter_total{provider="generic",reason="attempts_exhausted"} 1"#;
        wait_for_metric(h, line).await;
        fail::remove("process-event");
    }
    2
}

async fn wait_for_metric(h: &Harness, line: &str) {
    eventually(line, || async {
        h.metrics().await.lines().any(|l| l == line).then_some(())
    })
    .await;
}

/// A signed Square webhook whose payment cannot be decoded: a dead letter.
async fn send_undecodable(h: &Harness) {
    let integration = h.integration(ProviderKind::Square).clone();
    let body = r#"{"merchant_id":"M1","type":"payment.updated","event_id":"6a2f0b4e-0000-4000-8000-00000000bad7","created_at":"2026-03-01T10:00:00Z","data":{"type":"payment","id":"PAYBAD","object":{"payment":{"id":"PAYBAD","amount_money":"lots"}}}}"#;
    let url = integration.notification_url.clone().expect("square url");
    let signature = kvitto::providers::square::signature::sign(
        &integration.signing_secrets[0],
        &url,
        body.as_bytes(),
    );
    let response = h
        .http
        .post(h.webhook_url(&format!("/webhooks/square/{}", integration.id)))
        .header("x-square-hmacsha256-signature", signature)
        .body(body)
        .send()
        .await
        .expect("kvitto answers");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn wait_until_processed(h: &Harness, purchases: i64, metric_line: Option<&str>) {
    eventually("every accepted purchase stored", || async {
        (h.transaction_count().await == purchases).then_some(())
    })
    .await;
    if let Some(line) = metric_line {
        wait_for_metric(h, line).await;
    }
}

fn check_rule_groups(rules: &[Value], problems: &mut Vec<String>) {
    let files: HashSet<String> = rules
        .iter()
        .filter_map(|g| Some(file_name(g["file"].as_str()?)))
        .collect();
    for file in RULE_FILES {
        let text = std::fs::read_to_string(file).expect("rule file");
        let declared = text
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
            })
            .count();
        let name = file_name(file);
        let loaded: usize = rules
            .iter()
            .filter(|g| g["file"].as_str().map(file_name).as_deref() == Some(name.as_str()))
            .map(|g| g["rules"].as_array().map_or(0, Vec::len))
            .sum();
        if !files.contains(&name) || loaded != declared {
            problems.push(format!(
                "{file}: {declared} rules declared, {loaded} loaded"
            ));
        }
    }
    for group in rules {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let error = rule["lastError"].as_str().unwrap_or_default();
            if rule["health"] != "ok" || !error.is_empty() {
                problems.push(format!(
                    "rule {} in group {}: health {}, error {error:?}",
                    rule["name"], group["name"], rule["health"]
                ));
            }
        }
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every dashboard target and rule expression, named for the messages, with
/// the dashboard's variables substituted.
fn expressions(rules: &[Value]) -> Vec<(String, String)> {
    let dashboard = load_dashboard();
    let mut all = Vec::new();
    for panel in dashboard_panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            let name = format!(
                "panel {title:?} ({})",
                target["refId"].as_str().unwrap_or_default()
            );
            all.push((
                name,
                substitute(target["expr"].as_str().unwrap_or_default()),
            ));
        }
    }
    for group in rules {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let kind = if rule["type"] == "alerting" {
                "alert"
            } else {
                "recording rule"
            };
            let name = format!("{kind} {}", rule["name"].as_str().unwrap_or_default());
            all.push((name, rule["query"].as_str().unwrap_or_default().to_string()));
        }
    }
    all
}

/// Grafana's variables as a query for every provider would have them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${provider}", ".*")
        .replace("$provider", ".*")
}

/// Label names of every metric looked up so far; empty when it has none.
#[derive(Default)]
struct SeriesCache(HashMap<String, HashSet<String>>);

impl SeriesCache {
    async fn labels(&mut self, prometheus: &Prometheus, metric: &str) -> &HashSet<String> {
        if !self.0.contains_key(metric) {
            let labels = prometheus.label_names(metric).await;
            self.0.insert(metric.to_string(), labels);
        }
        &self.0[metric]
    }
}

async fn check_expression(
    prometheus: &Prometheus,
    series: &mut SeriesCache,
    name: &str,
    expr: &str,
    problems: &mut Vec<String>,
) {
    if let Err(error) = prometheus.query(expr).await {
        problems.push(format!("{name}: query fails: {error}"));
        return;
    }
    let parsed = promql::parse(expr);
    let mut all_labels = HashSet::new();
    let mut missing = HashSet::new();
    for selector in &parsed.selectors {
        let labels = series.labels(prometheus, &selector.metric).await;
        if labels.is_empty() {
            if missing.insert(&selector.metric) {
                problems.push(format!("{name}: no series of {}", selector.metric));
            }
            continue;
        }
        for label in &selector.labels {
            if !labels.contains(label) {
                problems.push(format!("{name}: {} has no label {label}", selector.metric));
            }
        }
        all_labels.extend(labels.iter().cloned());
    }
    if all_labels.is_empty() {
        return;
    }
    for label in &parsed.grouping {
        if !all_labels.contains(label) {
            problems.push(format!(
                "{name}: groups by {label}, which no series in it has"
            ));
        }
    }
}

async fn check_panels_with_data(prometheus: &Prometheus, problems: &mut Vec<String>) {
    let dashboard = load_dashboard();
    let panels = dashboard_panels(&dashboard);
    for title in PANELS_WITH_DATA {
        let panel = panels
            .iter()
            .find(|p| p["title"] == *title)
            .unwrap_or_else(|| panic!("{DASHBOARD} has no panel {title:?}"));
        let mut shows_data = false;
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = substitute(target["expr"].as_str().unwrap_or_default());
            let result = prometheus.query(&expr).await.unwrap_or_default();
            shows_data |= result.iter().any(|sample| finite_value(sample).is_some());
        }
        if !shows_data {
            problems.push(format!("panel {title:?} shows no data under the traffic"));
        }
    }
}

async fn check_alerts(prometheus: &Prometheus, problems: &mut Vec<String>) {
    let alerts = prometheus.alerts().await;
    for name in ALERTS_PROVOKED {
        if active(&alerts, name).is_empty() {
            problems.push(format!("alert {name} is neither pending nor firing"));
        }
    }
    let dead_letter = alerts.iter().any(|a| {
        a["labels"]["alertname"] == "KvittoDeadLetters"
            && a["labels"]["provider"] == "square"
            && a["labels"]["reason"] == "undecodable"
            && a["state"] == "firing"
    });
    if !dead_letter {
        problems.push("alert KvittoDeadLetters not firing for square/undecodable".into());
    }
    let rail_failing = alerts.iter().any(|a| {
        a["labels"]["alertname"] == "KvittoPayoutRailFailing" && a["labels"]["rail"] == "swish"
    });
    if !rail_failing {
        problems.push("alert KvittoPayoutRailFailing not active for swish".into());
    }

    // A scrape that times out on a loaded machine makes KvittoDown pending
    // until the next evaluation; only what is still active a few
    // evaluations later is a finding.
    let mut loud: Vec<&str> = ALERTS_QUIET
        .iter()
        .copied()
        .filter(|name| !active(&alerts, name).is_empty())
        .collect();
    if !loud.is_empty() {
        tokio::time::sleep(QUIET_RECHECK).await;
        let later = prometheus.alerts().await;
        loud.retain(|name| !active(&later, name).is_empty());
        for name in loud {
            for alert in active(&later, name) {
                problems.push(format!("alert {name} should be quiet: {alert}"));
            }
        }
    }
}

/// The state and labels of every active alert called `name`.
fn active(alerts: &[Value], name: &str) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .map(|a| format!("{} {}", a["state"], a["labels"]))
        .collect()
}

fn finite_value(sample: &Value) -> Option<f64> {
    let value: f64 = sample["value"][1].as_str()?.parse().ok()?;
    value.is_finite().then_some(value)
}
