//! Several kvitto instances on one Kafka consumer group and one database
//! share the work: every purchase is processed, once.

use std::collections::HashSet;

use kvitto::sandbox::send::{self, SendOptions};
use serde_json::Value;

use crate::support::{Harness, Runtime, eventually};

#[actix_rt::test]
async fn two_instances_in_one_consumer_group_process_everything_once() {
    let Some(h) = Harness::start(Runtime::KafkaPostgres, |_| {}).await else {
        return;
    };
    // The second instance listens on ports of its own.
    let mut second_config = h.env.config.clone();
    second_config.server.webhook_listen = "127.0.0.1:0".into();
    second_config.server.admin_listen = "127.0.0.1:0".into();
    let second = kvitto::app::start(second_config)
        .await
        .expect("second instance starts");

    let options = SendOptions {
        count: 140,
        concurrency: 8,
        seed: 5,
        ..SendOptions::default()
    };
    // Half the traffic to each instance's listener.
    let (first_url, second_url) = (
        format!("http://{}", h.kvitto.webhook_addr),
        format!("http://{}", second.webhook_addr),
    );
    let first_half = send::run(&h.sandbox, &first_url, &options);
    let second_options = SendOptions {
        seed: 6,
        ..options.clone()
    };
    let second_half = send::run(&h.sandbox, &second_url, &second_options);
    let (first_half, second_half) = futures::join!(first_half, second_half);
    let (first_half, second_half) = (first_half.unwrap(), second_half.unwrap());
    assert_eq!(
        first_half.unexpected_total() + second_half.unexpected_total(),
        0
    );
    let expected = (first_half.purchases.len() + second_half.purchases.len()) as i64;

    eventually("every purchase stored", || async {
        (h.transaction_count().await == expected).then_some(())
    })
    .await;
    let events = eventually("one event per purchase", || async {
        let events: Vec<Value> = h
            .topic(&h.env.config.bus.transactions_topic())
            .await
            .iter()
            .map(|d| serde_json::from_slice(&d.message.payload).unwrap())
            .collect();
        (events.len() as i64 >= expected).then_some(events)
    })
    .await;
    let ids: HashSet<_> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len() as i64, expected);
    assert_eq!(
        events.len() as i64,
        expected,
        "no transaction published twice"
    );
    second.shutdown().await;
    h.shutdown().await;
}
