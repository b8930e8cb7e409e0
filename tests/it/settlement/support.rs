//! A kvitto with settlement keys configured, and the steps the settlement
//! tests share: purchases stored through real webhooks, feedback posted
//! through the API, and reads of the rows and topics it leads to.

use kvitto::canonical::{LineItem, PaymentState};
use kvitto::config::Config;
use kvitto::providers::ProviderKind;
use kvitto::sandbox::{Purchase, WebhookKind};
use kvitto::settlement::config::{ApiKeyConfig, StaffKeyConfig};
use kvitto::settlement::store::{self as rows, FeedbackState, Settlement};
use kvitto::settlement::{SettlementState, ledger, settlement_id};
use reqwest::StatusCode;
use sqlx::Row;

use crate::support::{Harness, Runtime, eventually};

pub const API_KEY_GENERIC: &str = "fb_test_gardsbutiken_0123456789abcdef";
pub const STAFF_KEY: &str = "staff_test_astrid_0123456789abcdef";
pub const BUSINESS: &str = "gardsbutiken";
pub const LOCATION: &str = "uppsala";
pub const SWISH_PAYOUT: &str = r#"{"rail":"swish","number":"46701234567","ssn":"199001011234"}"#;

/// Leaves both payout rails unconfigured: settlements stay `pending`.
pub fn no_rails(config: &mut Config) {
    config.settlement.stripe = None;
    config.settlement.swish = None;
}

pub struct Money {
    pub harness: Harness,
}

impl Money {
    pub async fn start(runtime: Runtime, tweak: impl FnOnce(&mut Config)) -> Option<Money> {
        let harness = Harness::start(runtime, |config| {
            config.settlement.tick_ms = 50;
            config.settlement.retry_min_pause_ms = 50;
            config.settlement.retry_max_pause_secs = 1;
            config.settlement.first_status_check_secs = 1;
            config.settlement.api_keys = vec![ApiKeyConfig {
                key: API_KEY_GENERIC.into(),
                business_id: BUSINESS.into(),
            }];
            config.settlement.staff_keys = vec![StaffKeyConfig {
                key: STAFF_KEY.into(),
                name: "Astrid Lind".into(),
            }];
            tweak(config);
        })
        .await?;
        Some(Money { harness })
    }

    pub fn pool(&self) -> &sqlx::AnyPool {
        self.harness.kvitto.store.pool()
    }

    /// A generic-POS purchase, sent as a webhook and stored as verified.
    pub async fn stored_purchase(&self, seed: u64) -> Purchase {
        let purchase = self.harness.purchase(ProviderKind::Generic, seed);
        self.send_and_store(&purchase).await;
        purchase
    }

    /// The same, for a purchase of exactly `amount_minor`.
    pub async fn stored_purchase_of(&self, seed: u64, amount_minor: i64) -> Purchase {
        let mut purchase = self.harness.purchase(ProviderKind::Generic, seed);
        purchase.amount_minor = amount_minor;
        purchase.line_items = vec![LineItem {
            name: "Ostbricka".into(),
            quantity: "1".into(),
            unit_price_minor: Some(amount_minor),
            total_minor: Some(amount_minor),
            sku: None,
        }];
        self.harness.sandbox.insert(purchase.clone());
        self.send_and_store(&purchase).await;
        purchase
    }

    /// Another purchase with the same amount, time and till as `first`.
    pub async fn stored_twin_of(&self, first: &Purchase, seed: u64) -> Purchase {
        let mut twin = self.harness.purchase(ProviderKind::Generic, seed);
        twin.amount_minor = first.amount_minor;
        twin.line_items = first.line_items.clone();
        twin.created_at = first.created_at;
        twin.updated_at = first.updated_at;
        twin.location_ref = first.location_ref.clone();
        self.harness.sandbox.insert(twin.clone());
        self.send_and_store(&twin).await;
        twin
    }

    async fn send_and_store(&self, purchase: &Purchase) {
        let webhook = self.harness.webhook(purchase, WebhookKind::Created);
        assert_eq!(self.harness.send(&webhook).await, StatusCode::OK);
        self.wait_transaction(purchase).await;
    }

    pub fn transaction_id_of(&self, purchase: &Purchase) -> String {
        let integration = self.harness.integration(purchase.provider);
        kvitto::canonical::transaction_id(
            purchase.provider,
            &integration.id,
            &purchase.transaction_ref,
        )
        .to_string()
    }

    pub async fn wait_transaction(&self, purchase: &Purchase) {
        let id = self.transaction_id_of(purchase);
        eventually("transaction stored", || async {
            self.harness
                .kvitto
                .store
                .transaction(&id)
                .await
                .ok()
                .flatten()
                .map(|_| ())
        })
        .await;
    }

    /// The provider refunds the purchase and says so in a webhook.
    pub async fn refund(&self, purchase: &Purchase) {
        self.harness
            .sandbox
            .update(purchase.provider, &purchase.transaction_ref, |p| {
                p.state = PaymentState::Refunded;
                p.updated_at = chrono::Utc::now() + chrono::Duration::seconds(1);
            });
        let refunded = self
            .harness
            .sandbox
            .get(purchase.provider, &purchase.transaction_ref)
            .expect("sandbox purchase");
        let webhook = self.harness.webhook(&refunded, WebhookKind::Updated);
        assert_eq!(self.harness.send(&webhook).await, StatusCode::OK);
        let id = self.transaction_id_of(purchase);
        eventually("refund stored", || async {
            let stored = self
                .harness
                .kvitto
                .store
                .transaction(&id)
                .await
                .ok()
                .flatten()?;
            (stored.state == PaymentState::Refunded).then_some(())
        })
        .await;
    }

    /// Feedback naming the purchase by its provider transaction id.
    pub fn feedback_for(
        &self,
        transaction_ref: &str,
        id: &str,
        customer: &str,
        score: u8,
    ) -> String {
        self.feedback_with(
            id,
            customer,
            score,
            &format!(r#"{{"provider_transaction_id":"{transaction_ref}"}}"#),
            SWISH_PAYOUT,
        )
    }

    /// Feedback describing the purchase by amount and time, `offset_secs`
    /// away from when it happened.
    pub fn feedback_by_hint(
        &self,
        purchase: &Purchase,
        id: &str,
        customer: &str,
        score: u8,
        offset_secs: i64,
    ) -> String {
        let at = purchase.created_at + chrono::Duration::seconds(offset_secs);
        let hint = format!(
            r#"{{"amount_minor":{},"currency":"{}","occurred_at":"{}"}}"#,
            purchase.amount_minor,
            purchase.currency,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        self.feedback_with(id, customer, score, &hint, SWISH_PAYOUT)
    }

    pub fn feedback_with(
        &self,
        id: &str,
        customer: &str,
        score: u8,
        purchase: &str,
        payout: &str,
    ) -> String {
        format!(
            r#"{{"feedback_id":"{id}","business_id":"{BUSINESS}","location_id":"{LOCATION}",
               "customer_ref":"{customer}","purchase":{purchase},"quality_score":{score},
               "payout":{payout}}}"#
        )
    }

    pub async fn post_feedback(&self, body: &str) -> (StatusCode, String) {
        self.post_feedback_with(Some(API_KEY_GENERIC), body).await
    }

    pub async fn post_feedback_with(&self, key: Option<&str>, body: &str) -> (StatusCode, String) {
        let mut request = self
            .harness
            .http
            .post(self.harness.webhook_url("/v1/feedback"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("kvitto answers");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// Writes raw bytes to the feedback topic, as the feedback service would.
    pub async fn publish_feedback_raw(&self, key: &str, payload: &[u8]) {
        let message = kvitto::bus::BusMessage {
            key: key.into(),
            payload: payload.to_vec(),
            headers: Vec::new(),
        };
        let topic = self.harness.env.config.bus.feedback_topic();
        self.harness
            .kvitto
            .bus
            .publish(&topic, &message, std::time::Duration::from_secs(10))
            .await
            .expect("feedback published");
    }

    pub async fn review_list(&self, key: &str) -> String {
        let response = self
            .harness
            .http
            .get(self.harness.webhook_url("/v1/review"))
            .bearer_auth(key)
            .send()
            .await
            .expect("kvitto answers");
        if response.status() != StatusCode::OK {
            return response.status().as_u16().to_string();
        }
        response.text().await.unwrap_or_default()
    }

    pub async fn review(
        &self,
        feedback_id: &str,
        action: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let response = self
            .harness
            .http
            .post(
                self.harness
                    .webhook_url(&format!("/v1/review/{feedback_id}/{action}")),
            )
            .bearer_auth(STAFF_KEY)
            .body(body.to_string())
            .send()
            .await
            .expect("kvitto answers");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    pub async fn feedback_state(&self, id: &str) -> Option<FeedbackState> {
        rows::feedback(self.pool(), id)
            .await
            .expect("read feedback")
            .map(|r| r.state)
    }

    pub async fn wait_feedback_state(&self, id: &str, state: FeedbackState) {
        eventually(&format!("feedback {id} {}", state.as_str()), || async {
            (self.feedback_state(id).await == Some(state)).then_some(())
        })
        .await;
    }

    /// Waits until matching decided the feedback, and says what it decided.
    pub async fn wait_feedback_decided(&self, id: &str) -> FeedbackState {
        eventually(&format!("feedback {id} decided"), || async {
            self.feedback_state(id)
                .await
                .filter(|s| *s != FeedbackState::Waiting)
        })
        .await
    }

    pub async fn settlement(&self, feedback_id: &str) -> Option<Settlement> {
        let id = settlement_id(feedback_id).to_string();
        rows::settlement(self.pool(), &id)
            .await
            .expect("read settlement")
    }

    pub async fn settlement_of(&self, feedback_id: &str) -> Settlement {
        eventually(&format!("settlement of {feedback_id}"), || {
            self.settlement(feedback_id)
        })
        .await
    }

    pub async fn wait_settlement_state(
        &self,
        feedback_id: &str,
        state: SettlementState,
    ) -> Settlement {
        eventually(
            &format!("settlement of {feedback_id} {}", state.as_str()),
            || async {
                self.settlement(feedback_id)
                    .await
                    .filter(|s| s.state == state)
            },
        )
        .await
    }

    pub async fn count(&self, table: &str, condition: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {condition}");
        let row = sqlx::query(&sql)
            .fetch_one(self.pool())
            .await
            .expect("count");
        row.try_get::<i64, _>("n").expect("count")
    }

    /// The first column `v` of a one-row query, as text.
    pub async fn scalar(&self, sql: &str) -> String {
        let row = sqlx::query(sql)
            .fetch_one(self.pool())
            .await
            .expect("query");
        row.try_get::<String, _>("v")
            .or_else(|_| row.try_get::<i64, _>("v").map(|v| v.to_string()))
            .expect("a text or integer column v")
    }

    pub async fn assert_ledger_balanced(&self) {
        let report = ledger::check(self.pool()).await.expect("ledger check");
        assert!(report.is_balanced(), "{:?}", report.problems);
    }

    /// Every event on `kvitto.settlements`, once the outbox is drained.
    pub async fn settlement_events(&self) -> Vec<serde_json::Value> {
        eventually("outbox drained", || async {
            (self.count("settlement_outbox", "published = 0").await == 0).then_some(())
        })
        .await;
        let topic = self.harness.env.config.bus.settlements_topic();
        self.harness
            .topic(&topic)
            .await
            .iter()
            .map(|d| serde_json::from_slice(&d.message.payload).expect("settlement event is JSON"))
            .collect()
    }

    /// The sum of every series of a metric.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        self.harness
            .metrics()
            .await
            .lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn shutdown(self) {
        self.harness.shutdown().await;
    }
}
