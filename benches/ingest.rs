//! Micro-benchmarks of the per-webhook CPU work: each provider's signature
//! check, envelope extraction at ingress, and payload decoding.
//!
//! `cargo bench --bench ingest`; results are in target/criterion/.

use std::hint::black_box;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvitto::config::Config;
use kvitto::providers::{self, ProviderKind, RawDelivery, WebhookRequest};
use kvitto::sandbox::{WebhookKind, generate, send};
use rand::SeedableRng;

fn demo_config() -> Config {
    let text = std::fs::read_to_string("config/kvitto.toml").expect("run from the repository root");
    Config::from_toml(&text).expect("shipped config is valid")
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn per_provider(c: &mut Criterion) {
    let config = demo_config();
    let now = chrono::Utc::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for integration in &config.integrations {
        let provider = integration.provider;
        let purchase = generate::purchase(&mut rng, integration, now);
        let webhook = send::webhook(integration, &purchase, WebhookKind::Created, now);
        let headers = header_map(&webhook.headers);
        let query = webhook
            .path_and_query
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("");
        let request = WebhookRequest {
            headers: &headers,
            body: &webhook.body,
            query,
        };
        let kept: Vec<(String, String)> = webhook
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let delivery = RawDelivery {
            body: &webhook.body,
            headers: &kept,
            query,
        };

        let mut group = c.benchmark_group(provider.as_str());
        group.throughput(Throughput::Elements(1));
        if !matches!(provider, ProviderKind::Swish | ProviderKind::Klarna) {
            group.bench_function("verify_signature", |b| {
                b.iter(|| {
                    providers::verify_signature(integration, black_box(&request), now).unwrap()
                })
            });
        }
        group.bench_function("envelope_info", |b| {
            b.iter(|| providers::envelope_info(provider, black_box(&request)).unwrap())
        });
        group.bench_function("decode", |b| {
            b.iter(|| providers::decode(provider, black_box(&delivery)).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, per_provider);
criterion_main!(benches);
