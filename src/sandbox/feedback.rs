//! The feedback service, played by `kvitto simulate`: scored feedback on
//! some of the purchases it sent, posted to `POST /v1/feedback` with each
//! business's key, then followed through `GET /v1/feedback/{id}` until each
//! reward is paid, failed or not given.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::canonical::PaymentState;
use crate::config::Config;
use crate::money::format_minor;
use crate::sandbox::Purchase;

const POLL_INTERVAL: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// A Swish payee number with this in it is declined by the sandbox.
const DECLINED_SWISH_NUMBER: &str = "46700000042";
/// A Stripe connected account whose payouts the sandbox fails.
const FAILING_STRIPE_ACCOUNT: &str = "acct_simfailclosedbank";

#[derive(Debug, Clone)]
pub struct FeedbackOptions {
    /// Share of the verified, completed purchases that get feedback.
    pub share: f64,
    /// Share of those whose payout destination the provider refuses.
    pub failing_payouts: f64,
    pub seed: u64,
}

/// One feedback sent, and the key to ask about it with.
#[derive(Debug, Clone)]
struct Sent {
    feedback_id: String,
    key: String,
}

/// What became of the feedback sent.
#[derive(Debug, Default)]
pub struct FeedbackReport {
    pub sent: usize,
    /// Feedback state (and reason, when not rewarded) → how many.
    pub outcomes: BTreeMap<String, usize>,
    /// Settlement state → (how many, total in minor units).
    pub settlements: BTreeMap<String, (usize, i64)>,
    pub currency: String,
    /// Purchases without a key for their business in the config.
    pub without_key: usize,
}

impl fmt::Display for FeedbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "feedback: {} sent", self.sent)?;
        for (outcome, count) in &self.outcomes {
            writeln!(f, "  {count:>5} {outcome}")?;
        }
        writeln!(f, "rewards:")?;
        if self.settlements.is_empty() {
            writeln!(f, "  none")?;
        }
        for (state, (count, total)) in &self.settlements {
            writeln!(
                f,
                "  {count:>5} {state:<10} {:>10} {}",
                format_minor(*total, &self.currency),
                self.currency
            )?;
        }
        if self.without_key > 0 {
            writeln!(
                f,
                "  ({} purchases got no feedback: their business has no key in [[settlement.api_keys]])",
                self.without_key
            )?;
        }
        Ok(())
    }
}

/// Sends feedback on a share of `purchases` (those the provider API will
/// confirm as completed) and waits until each is decided and each reward
/// is final.
pub async fn run(
    config: &Config,
    target: &str,
    purchases: &[&Purchase],
    options: &FeedbackOptions,
    timeout: Duration,
) -> anyhow::Result<FeedbackReport> {
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0xfeed_bac4);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let mut report = FeedbackReport::default();
    let mut sent = Vec::new();
    for (n, purchase) in purchases.iter().enumerate() {
        if purchase.state != PaymentState::Completed || !rng.gen_bool(options.share) {
            continue;
        }
        let Some(integration) = config.integration(purchase.provider, &purchase.integration_id)
        else {
            continue;
        };
        let Some(key) = config
            .settlement
            .api_keys
            .iter()
            .find(|k| k.business_id == integration.business_id)
        else {
            report.without_key += 1;
            continue;
        };
        let failing = rng.gen_bool(options.failing_payouts);
        let payout = if n % 2 == 0 {
            let account = if failing {
                FAILING_STRIPE_ACCOUNT.to_string()
            } else {
                format!("acct_sim{:010}", rng.gen_range(0..10_000_000_000u64))
            };
            json!({"rail": "stripe", "account": account})
        } else {
            let number = if failing {
                DECLINED_SWISH_NUMBER.to_string()
            } else {
                format!("4673{:07}", rng.gen_range(1_000_000..10_000_000))
            };
            json!({"rail": "swish", "number": number, "ssn": "199001011234"})
        };
        let feedback_id = format!("sim-{}-{n}", options.seed);
        let body = json!({
            "feedback_id": feedback_id,
            "business_id": integration.business_id,
            "location_id": integration.location_id,
            "customer_ref": format!("sim-customer-{}", rng.gen_range(0..40)),
            "purchase": {"provider_transaction_id": purchase.transaction_ref},
            "quality_score": rng.gen_range(30..=100),
            "payout": payout,
        });
        let response = http
            .post(format!("{target}/v1/feedback"))
            .bearer_auth(&key.key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("posting feedback to {target}/v1/feedback"))?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = response.text().await.unwrap_or_default();
            bail!("kvitto answered {status} to feedback {feedback_id}: {text}");
        }
        sent.push(Sent {
            feedback_id,
            key: key.key.clone(),
        });
    }
    report.sent = sent.len();
    println!("sent {} feedback to {target}/v1/feedback", sent.len());
    report.currency = config.settlement.defaults.currency.clone();
    let finals = follow(&http, target, &sent, timeout).await?;
    for answer in finals {
        let state = answer["state"].as_str().unwrap_or("unknown");
        let outcome = match answer["reason"].as_str() {
            Some(reason) if state != "matched" => format!("{state} ({reason})"),
            _ => state.to_string(),
        };
        *report.outcomes.entry(outcome).or_default() += 1;
        if let Some(settlement) = answer["settlement"].as_object() {
            let state = settlement["state"]
                .as_str()
                .unwrap_or("unknown")
                .to_string();
            let amount = settlement["amount_minor"].as_i64().unwrap_or(0);
            let entry = report.settlements.entry(state).or_default();
            entry.0 += 1;
            entry.1 += amount;
        }
    }
    Ok(report)
}

/// Whether kvitto is done with one feedback: decided, and its settlement
/// (if any) final.
fn settled(answer: &Value) -> bool {
    let decided = !matches!(answer["state"].as_str(), Some("waiting") | None);
    let settlement_final = match answer["settlement"].as_object() {
        None => true,
        Some(s) => matches!(
            s.get("state").and_then(Value::as_str),
            Some("paid" | "failed" | "canceled")
        ),
    };
    decided && settlement_final
}

async fn follow(
    http: &reqwest::Client,
    target: &str,
    sent: &[Sent],
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let started = Instant::now();
    let mut last_progress = started;
    let mut done: Vec<Option<Value>> = vec![None; sent.len()];
    loop {
        for (slot, feedback) in done.iter_mut().zip(sent) {
            if slot.is_some() {
                continue;
            }
            let response = http
                .get(format!("{target}/v1/feedback/{}", feedback.feedback_id))
                .bearer_auth(&feedback.key)
                .send()
                .await;
            // 404 for a moment after the 202, until intake has stored it.
            let Ok(response) = response else { continue };
            if !response.status().is_success() {
                continue;
            }
            let Ok(answer) = response.json::<Value>().await else {
                continue;
            };
            if settled(&answer) {
                *slot = Some(answer);
            }
        }
        let open = done.iter().filter(|d| d.is_none()).count();
        if open == 0 {
            return Ok(done.into_iter().flatten().collect());
        }
        if started.elapsed() >= timeout {
            let first = sent
                .iter()
                .zip(&done)
                .find(|(_, d)| d.is_none())
                .map(|(s, _)| s.feedback_id.as_str())
                .unwrap_or_default();
            bail!(
                "timed out after {} s: {open} of {} feedback not settled yet (e.g. {first}; \
                 see `kvitto settlements` and kvitto's log)",
                timeout.as_secs(),
                sent.len()
            );
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            println!(
                "waiting for kvitto to settle {open} of {} feedback",
                sent.len()
            );
            last_progress = Instant::now();
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_is_settled_once_decided_and_its_reward_final() {
        let waiting = json!({"state": "waiting", "settlement": null});
        let unrewarded =
            json!({"state": "not_rewarded", "reason": "below_tiers", "settlement": null});
        let pending = json!({"state": "matched", "settlement": {"state": "submitted"}});
        let paid = json!({"state": "matched", "settlement": {"state": "paid"}});
        assert!(!settled(&waiting));
        assert!(settled(&unrewarded));
        assert!(!settled(&pending));
        assert!(settled(&paid));
    }
}
