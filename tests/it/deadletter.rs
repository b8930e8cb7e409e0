//! Dead letters can be listed and replayed once their cause is fixed, and a
//! replay is idempotent.

use std::time::Duration;

use kvitto::deadletter::{self, Filter};
use kvitto::providers::ProviderKind;
use kvitto::sandbox::WebhookKind;
use rand::SeedableRng;
use reqwest::StatusCode;

use crate::support::{Harness, Runtime, eventually};

on_both_runtimes!(replayed_dead_letter_is_processed_once_its_cause_is_fixed);
async fn replayed_dead_letter_is_processed_once_its_cause_is_fixed(runtime: Runtime) {
    let Some(h) = Harness::start(runtime, |_| {}).await else {
        return;
    };
    // A Klarna push for an order the provider does not know (yet).
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let integration = h.integration(ProviderKind::Klarna).clone();
    let order = kvitto::sandbox::generate::purchase(&mut rng, &integration, chrono::Utc::now());
    assert_eq!(
        h.send(&h.webhook(&order, WebhookKind::Created)).await,
        StatusCode::OK
    );

    let bus_config = &h.env.config.bus;
    let klarna = Filter {
        provider: Some("klarna".into()),
        ..Filter::default()
    };
    let letters = eventually("the dead letter", || async {
        let letters = deadletter::list(&h.kvitto.bus, bus_config, &klarna)
            .await
            .unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter.reason, "provider_api");
    let other = Filter {
        provider: Some("square".into()),
        ..Filter::default()
    };
    assert!(
        deadletter::list(&h.kvitto.bus, bus_config, &other)
            .await
            .unwrap()
            .is_empty()
    );

    // The cause is fixed: the provider knows the order now.
    h.sandbox.insert(order.clone());
    let timeout = Duration::from_secs(5);
    assert_eq!(
        deadletter::replay(&h.kvitto.bus, &letters, timeout)
            .await
            .unwrap(),
        1
    );
    eventually("the replayed order stored", || async {
        (h.transaction_count().await == 1).then_some(())
    })
    .await;

    // Replaying again changes nothing.
    deadletter::replay(&h.kvitto.bus, &letters, timeout)
        .await
        .unwrap();
    let line = r#"kvitto_events_processed_total{provider="klarna",outcome="duplicate"} 1"#;
    eventually("the second replay recognised", || async {
        h.metrics().await.contains(line).then_some(())
    })
    .await;
    assert_eq!(h.transaction_count().await, 1);
    assert_eq!(h.topic(&bus_config.transactions_topic()).await.len(), 1);
    h.shutdown().await;
}
