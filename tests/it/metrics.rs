//! The operational metrics, read from `/metrics` the way Prometheus reads
//! them: consumer lag on both runtimes, signature failures per integration,
//! the in-flight gauge, the log-flood counter and the process metrics; and
//! the catalog in docs/metrics.md against the one in the code.

use std::collections::BTreeSet;
use std::time::Duration;

use kvitto::providers::ProviderKind;
use kvitto::sandbox::{Fault, WebhookKind};
use kvitto::telemetry::throttle::ThrottleSite;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::support::{Harness, Runtime, eventually};

/// One sample of `/metrics`: its labels as written, and its value.
struct Sample {
    labels: String,
    value: f64,
}

/// Every sample of the metric `name` in a Prometheus text exposition.
fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = match series.split_once('{') {
                Some((metric, labels)) if metric == name => labels.trim_end_matches('}'),
                None if series == name => "",
                _ => return None,
            };
            Some(Sample {
                labels: labels.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Samples of `name` carrying every one of `labels` (`key="value"` each).
fn matching(text: &str, name: &str, labels: &[&str]) -> Vec<f64> {
    samples(text, name)
        .into_iter()
        .filter(|sample| {
            let have: Vec<&str> = sample.labels.split(',').collect();
            labels.iter().all(|wanted| have.contains(wanted))
        })
        .map(|sample| sample.value)
        .collect()
}

/// The single value of `name` with `labels`; `None` when the series is absent.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let found = matching(text, name, labels);
    assert!(found.len() <= 1, "{name}{labels:?} names several series");
    found.first().copied()
}

async fn embedded() -> Harness {
    Harness::start(Runtime::Embedded, |_| {})
        .await
        .expect("embedded runtime")
}

on_both_runtimes!(consumer_lag_counts_waiting_events_and_returns_to_zero);
async fn consumer_lag_counts_waiting_events_and_returns_to_zero(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    // The provider API fails, so the worker retries the first event and
    // the others wait behind it, uncommitted.
    h.sandbox
        .set_fault(ProviderKind::Stripe, Some(Fault::ServerError));
    let events = 4;
    for seed in 0..events {
        let purchase = h.purchase(ProviderKind::Stripe, 100 + seed);
        let webhook = h.webhook(&purchase, WebhookKind::Created);
        assert_eq!(h.send(&webhook).await, StatusCode::OK);
    }
    let lag = r#"provider="stripe""#;
    eventually("lag of every waiting event", || async {
        let total: f64 = matching(&h.metrics().await, "kvitto_consumer_lag_messages", &[lag])
            .iter()
            .sum();
        (total == events as f64).then_some(())
    })
    .await;

    h.sandbox.set_fault(ProviderKind::Stripe, None);
    eventually("every partition caught up", || async {
        let metrics = h.metrics().await;
        let verified = value(
            &metrics,
            "kvitto_events_processed_total",
            &[lag, r#"outcome="verified""#],
        );
        let lags = matching(&metrics, "kvitto_consumer_lag_messages", &[lag]);
        (verified == Some(events as f64) && !lags.is_empty() && lags.iter().all(|&l| l == 0.0))
            .then_some(())
    })
    .await;
    if runtime == Runtime::Embedded {
        let metrics = h.metrics().await;
        assert_eq!(
            samples(&metrics, "kvitto_consumer_lag_messages")
                .iter()
                .filter(|s| s.labels.contains(lag))
                .map(|s| s.labels.as_str())
                .collect::<Vec<_>>(),
            vec![r#"provider="stripe",partition="0""#],
            "the embedded bus has one partition per topic"
        );
    }
    h.shutdown().await;
}

#[actix_rt::test]
async fn signature_and_timestamp_refusals_are_counted_per_configured_integration() {
    let h = embedded().await;
    let integration = h.integration(ProviderKind::Stripe).id.clone();
    let series = [
        "provider=\"stripe\"".to_string(),
        format!("integration=\"{integration}\""),
    ];
    let series: Vec<&str> = series.iter().map(String::as_str).collect();
    let failures = "kvitto_webhook_signature_failures_total";
    assert_eq!(
        value(&h.metrics().await, failures, &series),
        Some(0.0),
        "exported from the start"
    );

    let purchase = h.purchase(ProviderKind::Stripe, 1);
    let mut forged = h.webhook(&purchase, WebhookKind::Created);
    assert!(kvitto::sandbox::send::corrupt_signature(&mut forged));
    assert_eq!(h.send(&forged).await, StatusCode::UNAUTHORIZED);
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let stale = kvitto::sandbox::send::webhook(
        h.integration(ProviderKind::Stripe),
        &purchase,
        WebhookKind::Created,
        an_hour_ago,
    );
    assert_eq!(h.send(&stale).await, StatusCode::UNAUTHORIZED);
    // An unknown integration is a 404, not a signature failure.
    let mut unknown = h.webhook(&purchase, WebhookKind::Created);
    unknown.path_and_query = "/webhooks/stripe/not-configured".into();
    assert_eq!(h.send(&unknown).await, StatusCode::NOT_FOUND);
    // A good webhook is not counted either.
    assert_eq!(
        h.send(&h.webhook(&purchase, WebhookKind::Created)).await,
        StatusCode::OK
    );

    let metrics = h.metrics().await;
    assert_eq!(value(&metrics, failures, &series), Some(2.0), "{metrics}");
    assert!(
        matching(&metrics, failures, &[r#"integration="not-configured""#]).is_empty(),
        "an id from an unknown path never becomes a label"
    );
    let other = format!("integration=\"{}\"", h.integration(ProviderKind::Square).id);
    assert_eq!(value(&metrics, failures, &[&other]), Some(0.0));
    for unsigned in [ProviderKind::Swish, ProviderKind::Klarna] {
        let token = &h.integration(unsigned).id;
        assert!(
            !metrics.contains(token.as_str()),
            "{unsigned:?}'s path token is a secret and must not appear in /metrics"
        );
    }
    h.shutdown().await;
}

#[actix_rt::test]
async fn a_flood_of_forged_webhooks_is_counted_as_suppressed_log_lines() {
    let h = embedded().await;
    let site = [r#"site="webhook_refused""#];
    let suppressed = "kvitto_log_lines_suppressed_total";
    let before = value(&h.metrics().await, suppressed, &site).expect("exported from the start");

    let flood = 30;
    let purchase = h.purchase(ProviderKind::Square, 2);
    let mut forged = h.webhook(&purchase, WebhookKind::Created);
    assert!(kvitto::sandbox::send::corrupt_signature(&mut forged));
    for _ in 0..flood {
        assert_eq!(h.send(&forged).await, StatusCode::UNAUTHORIZED);
    }

    let after = value(&h.metrics().await, suppressed, &site).unwrap();
    // The throttle lets one line a minute through: the flood spans at most
    // two windows, so at most two of its lines were logged.
    assert!(
        after - before >= f64::from(flood - 2),
        "suppressed {before} -> {after}"
    );
    assert!(after - before <= f64::from(flood));
    h.shutdown().await;
}

#[actix_rt::test]
async fn in_flight_gauge_counts_a_request_until_it_is_answered() {
    let h = Harness::start(Runtime::Embedded, |config| {
        config.server.request_timeout_ms = 30_000;
    })
    .await
    .expect("embedded runtime");
    let gauge = "kvitto_webhooks_in_flight";
    assert_eq!(value(&h.metrics().await, gauge, &[]), Some(0.0));

    // A client that sends its headers and part of its body, then stalls.
    let integration = h.integration(ProviderKind::Generic).id.clone();
    let mut stalled = tokio::net::TcpStream::connect(h.kvitto.webhook_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /webhooks/generic/{integration} HTTP/1.1\r\nhost: kvitto\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"event_id\":"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.flush().await.unwrap();
    eventually("the stalled request in flight", || async {
        (value(&h.metrics().await, gauge, &[]) == Some(1.0)).then_some(())
    })
    .await;

    drop(stalled);
    eventually("the gauge back at zero", || async {
        (value(&h.metrics().await, gauge, &[]) == Some(0.0)).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[actix_rt::test]
async fn process_metrics_use_the_standard_names_and_are_positive() {
    let h = embedded().await;
    let metrics = h.metrics().await;
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
    ] {
        let found = value(&metrics, name, &[]).unwrap_or_else(|| panic!("{name} missing"));
        assert!(found > 0.0, "{name} = {found}");
    }
    let started = value(&metrics, "process_start_time_seconds", &[]).unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        started <= now && now - started < Duration::from_secs(3600).as_secs_f64(),
        "this test process started {started}, now {now}"
    );
    assert!(value(&metrics, "process_cpu_seconds_total", &[]).is_some_and(|cpu| cpu >= 0.0));
    assert!(metrics.contains("# TYPE process_cpu_seconds_total counter"));
    h.shutdown().await;
}

#[actix_rt::test]
async fn every_exported_kvitto_metric_has_help_text() {
    let h = embedded().await;
    let purchase = h.purchase(ProviderKind::Square, 3);
    assert_eq!(
        h.send(&h.webhook(&purchase, WebhookKind::Created)).await,
        StatusCode::OK
    );
    eventually("the event processed", || async {
        let metrics = h.metrics().await;
        value(
            &metrics,
            "kvitto_events_processed_total",
            &[r#"provider="square""#, r#"outcome="verified""#],
        )
        .map(|_| ())
    })
    .await;
    eventually("the lag gauge", || async {
        let metrics = h.metrics().await;
        (!samples(&metrics, "kvitto_consumer_lag_messages").is_empty()).then_some(())
    })
    .await;

    let metrics = h.metrics().await;
    let families: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .filter(|name| name.starts_with("kvitto_"))
        .collect();
    assert!(families.len() >= 10, "{metrics}");
    for family in families {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "{family} has no help text"
        );
    }
    h.shutdown().await;
}

#[actix_rt::test]
async fn end_to_end_latency_counts_published_transactions_only() {
    let h = embedded().await;
    let purchase = h.purchase(ProviderKind::Square, 4);
    let webhook = h.webhook(&purchase, WebhookKind::Created);
    assert_eq!(h.send(&webhook).await, StatusCode::OK);
    assert_eq!(h.send(&webhook).await, StatusCode::OK);
    let square = r#"provider="square""#;
    eventually("both deliveries processed", || async {
        let metrics = h.metrics().await;
        let processed = |outcome: &str| {
            value(
                &metrics,
                "kvitto_events_processed_total",
                &[square, &format!("outcome=\"{outcome}\"")],
            )
        };
        (processed("verified") == Some(1.0) && processed("duplicate") == Some(1.0)).then_some(())
    })
    .await;
    let metrics = h.metrics().await;
    assert_eq!(
        value(
            &metrics,
            "kvitto_event_end_to_end_duration_seconds_count",
            &[square]
        ),
        Some(1.0),
        "the duplicate published nothing"
    );
    h.shutdown().await;
}

const CATALOG: &str = "src/telemetry/catalog.rs";
const METRICS_DOC: &str = "docs/metrics.md";

/// Every metric name the catalog declares: its `"kvitto_..."` literals.
fn catalog_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(CATALOG).expect("catalog source");
    text.match_indices("\"kvitto_")
        .filter_map(|(at, _)| {
            let name = &text[at + 1..];
            name.find('"').map(|end| name[..end].to_string())
        })
        .collect()
}

/// The first column of every table row in docs/metrics.md naming a
/// `kvitto_` metric.
fn documented_names(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `kvitto_"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| format!("kvitto_{name}"))
        .collect()
}

#[test]
fn metrics_doc_lists_every_catalog_metric_and_no_other() {
    let doc = std::fs::read_to_string(METRICS_DOC).expect("metrics doc");
    let declared = catalog_names();
    let documented = documented_names(&doc);
    assert!(declared.len() >= 30, "{declared:?}");
    let undocumented: Vec<&String> = declared.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&declared).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "declared in {CATALOG} but not in {METRICS_DOC}: {undocumented:?}; \
         in {METRICS_DOC} but not declared: {unknown:?}"
    );
}

#[test]
fn metrics_doc_names_every_throttled_log_site() {
    let doc = std::fs::read_to_string(METRICS_DOC).expect("metrics doc");
    let row = doc
        .lines()
        .find(|line| line.starts_with("| `kvitto_log_lines_suppressed_total`"))
        .expect("a row for the suppressed log lines");
    for site in ThrottleSite::ALL {
        let label = format!("`{}`", site.as_str());
        assert!(
            row.contains(&label),
            "{METRICS_DOC} does not name site {label}"
        );
    }
}
