//! A randomized run: thousands of purchases from every provider, feedback
//! on most of them (some sent three times at once, some purchases claimed
//! by two feedbacks, some described by amount and time, some through the
//! topic), payout rails failing at random, refunds before and after payout.
//! Afterwards the ledger balances to the öre, no purchase backs two
//! rewards, every paid reward left the provider exactly once for exactly
//! its amount, and caps and budgets held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kvitto::config::Config;
use kvitto::providers::ProviderKind;
use kvitto::sandbox::Purchase;
use kvitto::sandbox::payouts::{FaultSpan, PayoutFault, PayoutOp};
use kvitto::sandbox::send::{self, SendOptions};
use kvitto::settlement::config::ApiKeyConfig;
use kvitto::settlement::store as rows;
use kvitto::settlement::{SettlementState, ledger};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Row;

use super::support::Money;
use crate::support::{Runtime, eventually, eventually_within};

const PURCHASES: usize = 2_000;
const CUSTOMERS: u32 = 150;
const SEED: u64 = 20_261_204;
/// How long the run's big waits may take on a busy two-core machine.
const LONG_WAIT: Duration = Duration::from_secs(180);

fn api_key(business_id: &str) -> String {
    format!("fb_test_{business_id}_random0123456789abcdef")
}

/// One key per business of the demo integrations, a short match deadline
/// so feedback without a purchase ends within the test, and budgets small
/// enough that some businesses run out.
fn random_run_config(config: &mut Config) {
    let businesses: HashSet<String> = config
        .integrations
        .iter()
        .map(|i| i.business_id.clone())
        .collect();
    for business_id in businesses {
        config.settlement.api_keys.push(ApiKeyConfig {
            key: api_key(&business_id),
            business_id,
        });
    }
    config.settlement.match_deadline_secs = 3;
    config.settlement.defaults.monthly_budget_minor = 300_000;
    config.settlement.rail_timeout_ms = 2_000;
}

/// A stored, verified transaction, as feedback would describe it.
struct Stored {
    provider_transaction_id: String,
    business_id: String,
    location_id: String,
    amount_minor: i64,
    currency: String,
    occurred_at: String,
}

async fn stored_transactions(pool: &sqlx::AnyPool) -> Vec<Stored> {
    sqlx::query(
        "SELECT provider_transaction_id, business_id, location_id, amount_minor, \
         currency, occurred_at FROM transactions WHERE verdict = 'verified'",
    )
    .fetch_all(pool)
    .await
    .expect("read transactions")
    .iter()
    .map(|row| Stored {
        provider_transaction_id: row.get("provider_transaction_id"),
        business_id: row.get("business_id"),
        location_id: row.get("location_id"),
        amount_minor: row.get("amount_minor"),
        currency: row.get("currency"),
        occurred_at: row.get("occurred_at"),
    })
    .collect()
}

fn destination(rng: &mut StdRng) -> String {
    let failing = rng.gen_bool(0.05);
    if rng.gen_bool(0.5) {
        let account = if failing {
            format!("acct_fail{:06}", rng.gen_range(0..1_000_000))
        } else {
            format!("acct_kund{:06}", rng.gen_range(0..1_000_000))
        };
        format!(r#"{{"rail":"stripe","account":"{account}"}}"#)
    } else {
        // A payee with 0000 in the number is declined by the sandbox.
        let number = if failing {
            format!("4670000{:04}", rng.gen_range(0..10_000))
        } else {
            format!("4673{:07}", rng.gen_range(1_111_111..9_999_999))
        };
        format!(r#"{{"rail":"swish","number":"{number}","ssn":"199001011234"}}"#)
    }
}

/// One feedback as the feedback service would send it.
fn feedback_body(rng: &mut StdRng, id: &str, purchase: &Stored, by_hint: bool) -> String {
    let customer = format!("cust-{}", rng.gen_range(0..CUSTOMERS));
    let score = rng.gen_range(0..=100);
    let hint = if by_hint {
        format!(
            r#"{{"amount_minor":{},"currency":"{}","occurred_at":"{}"}}"#,
            purchase.amount_minor, purchase.currency, purchase.occurred_at
        )
    } else {
        format!(
            r#"{{"provider_transaction_id":"{}"}}"#,
            purchase.provider_transaction_id
        )
    };
    format!(
        r#"{{"feedback_id":"{id}","business_id":"{}","location_id":"{}","customer_ref":"{customer}","purchase":{hint},"quality_score":{score},"payout":{}}}"#,
        purchase.business_id,
        purchase.location_id,
        destination(rng)
    )
}

/// How one feedback reaches kvitto.
enum Door {
    Api { key: String },
    Topic,
}

struct Submission {
    feedback_id: String,
    body: String,
    door: Door,
    /// Sent this many times at once.
    copies: usize,
}

fn plan(transactions: &[Stored], rng: &mut StdRng) -> Vec<Submission> {
    let mut submissions = Vec::new();
    for (n, purchase) in transactions.iter().enumerate() {
        let roll: f64 = rng.r#gen();
        if roll < 0.15 {
            continue;
        }
        let by_hint = rng.gen_bool(0.1);
        let door = |rng: &mut StdRng| {
            if rng.gen_bool(0.2) {
                Door::Topic
            } else {
                Door::Api {
                    key: api_key(&purchase.business_id),
                }
            }
        };
        let id = format!("fb-{n}");
        let copies = if roll > 0.9 { 3 } else { 1 };
        let body = feedback_body(rng, &id, purchase, by_hint);
        let door_first = door(rng);
        submissions.push(Submission {
            feedback_id: id,
            body,
            door: door_first,
            copies,
        });
        if roll > 0.8 && roll <= 0.9 {
            // A second customer claims the same purchase.
            let id = format!("fb-{n}-again");
            let body = feedback_body(rng, &id, purchase, false);
            let door_second = door(rng);
            submissions.push(Submission {
                feedback_id: id,
                body,
                door: door_second,
                copies: 1,
            });
        }
    }
    // Concurrent copies and claims arrive in no particular order.
    use rand::seq::SliceRandom;
    submissions.shuffle(rng);
    submissions
}

async fn submit(h: &Money, submission: &Submission) {
    let sends = (0..submission.copies).map(|_| async {
        match &submission.door {
            Door::Api { key } => {
                let (status, body) = h.post_feedback_with(Some(key), &submission.body).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            }
            Door::Topic => {
                h.publish_feedback_raw(&submission.feedback_id, submission.body.as_bytes())
                    .await
            }
        }
    });
    futures::future::join_all(sends).await;
}

/// Injects one random fault after another into the payout rails until
/// told to stop.
fn chaos(h: &Money, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let sandbox = h.harness.sandbox.clone();
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(SEED ^ 0xfa17);
        let ops = [
            PayoutOp::StripeTransfer,
            PayoutOp::StripePayout,
            PayoutOp::StripePayoutGet,
            PayoutOp::SwishPayout,
            PayoutOp::SwishPayoutGet,
        ];
        let mut injected = 0;
        while !stop.load(Ordering::Relaxed) {
            let op = ops[rng.gen_range(0..ops.len())];
            let fault = match rng.gen_range(0..4) {
                0 => PayoutFault::ServerError,
                1 => PayoutFault::LoseAnswer,
                2 => PayoutFault::RateLimited {
                    retry_after_secs: 1,
                },
                _ => PayoutFault::Hang(Duration::from_millis(300)),
            };
            sandbox.payouts.inject(op, fault, FaultSpan::Once);
            injected += 1;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for op in ops {
            sandbox.payouts.clear_fault(op);
        }
        injected
    })
}

async fn randomized_run_balances_and_pays_each_purchase_once(runtime: Runtime) {
    let Some(h) = Money::start(runtime, random_run_config).await else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(SEED);

    // Purchases through real signed webhooks from every provider, some
    // delivered twice.
    let options = SendOptions {
        count: PURCHASES,
        rate_per_sec: 0.0,
        concurrency: 16,
        duplicate_ratio: 0.1,
        seed: SEED,
        ..SendOptions::default()
    };
    let target = h.harness.webhook_url("");
    let report = send::run(&h.harness.sandbox, &target, &options)
        .await
        .expect("sender ran");
    assert_eq!(report.unexpected_total(), 0, "{report}");
    let accepted = report.purchases.len() as i64;
    eventually_within("every purchase stored", LONG_WAIT, || async {
        let stored = h.harness.kvitto.store.count_transactions().await.ok()?;
        (stored >= accepted).then_some(())
    })
    .await;
    let transactions = stored_transactions(h.pool()).await;
    assert!(
        transactions.len() >= PURCHASES / 2,
        "{}",
        transactions.len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let faults = chaos(&h, stop.clone());
    let submissions = plan(&transactions, &mut rng);
    let feedback_ids: HashSet<&str> = submissions.iter().map(|s| s.feedback_id.as_str()).collect();
    futures::stream::iter(&submissions)
        .for_each_concurrent(16, |s| submit(&h, s))
        .await;

    // Refunds of generic-POS purchases: some whatever their state, which
    // catches settlements before their payout, and some already paid.
    let generic: HashMap<String, &Purchase> = report
        .purchases
        .iter()
        .filter(|p| p.provider == ProviderKind::Generic)
        .map(|p| (h.transaction_id_of(p), p))
        .collect();
    let mut refunded = HashSet::new();
    for (id, purchase) in generic.iter().step_by(12) {
        h.refund(purchase).await;
        refunded.insert(id.clone());
    }
    let paid_generic = eventually("generic purchases paid", || async {
        let ids: Vec<String> = sqlx::query(
            "SELECT s.purchase_ref AS id FROM settlements s \
             JOIN transactions t ON t.id = s.purchase_ref \
             WHERE t.provider = 'generic' AND s.state = 'paid' AND t.state = 'completed'",
        )
        .fetch_all(h.pool())
        .await
        .ok()?
        .iter()
        .map(|r| r.get("id"))
        .collect();
        (ids.len() >= 10).then_some(ids)
    })
    .await;
    for id in paid_generic
        .iter()
        .filter(|id| !refunded.contains(*id))
        .take(8)
    {
        h.refund(generic[id]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let injected = faults.await.unwrap();
    assert!(injected > 0);

    eventually("every feedback stored", || async {
        let stored = h.count("feedback", "1 = 1").await;
        (stored == feedback_ids.len() as i64).then_some(())
    })
    .await;
    eventually_within(
        "every feedback decided and settlement final",
        LONG_WAIT,
        || async {
            let waiting = h.count("feedback", "state = 'waiting'").await;
            let open = h
                .count("settlements", "state IN ('pending', 'submitted')")
                .await;
            let refunded = rows::refunded_settlements(h.pool(), 10).await.ok()?;
            (waiting == 0 && open == 0 && refunded.is_empty()).then_some(())
        },
    )
    .await;

    audit(&h).await;
    h.shutdown().await;
}

/// What must hold after any run, however it went.
async fn audit(h: &Money) {
    let pool = h.pool();
    let report = ledger::check(pool).await.expect("ledger check");
    assert!(report.is_balanced(), "{:?}", report.problems);
    assert_eq!(
        ledger::balance(pool, ledger::CUSTOMERS_PAYABLE)
            .await
            .unwrap(),
        0,
        "every reward is paid or given back"
    );

    let twice = sqlx::query(
        "SELECT purchase_ref, COUNT(*) AS n FROM settlements GROUP BY purchase_ref HAVING COUNT(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        twice.is_empty(),
        "{} purchases back two rewards",
        twice.len()
    );

    let ids: Vec<String> = sqlx::query("SELECT id FROM settlements")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("id"))
        .collect();
    let mut settlements = Vec::new();
    for id in &ids {
        settlements.push(rows::settlement(pool, id).await.unwrap().expect("row"));
    }
    let by_state = |state| settlements.iter().filter(|s| s.state == state).count();
    eprintln!(
        "randomized run: {} settlements, {} paid, {} failed, {} canceled, {} clawed back",
        settlements.len(),
        by_state(SettlementState::Paid),
        by_state(SettlementState::Failed),
        by_state(SettlementState::Canceled),
        settlements.iter().filter(|s| s.clawed_back).count()
    );
    // A run in which nothing was paid or nothing failed proves little.
    assert!(by_state(SettlementState::Paid) > 100, "too few paid");
    assert!(by_state(SettlementState::Failed) > 0, "none failed");
    assert!(
        settlements.iter().any(|s| s.clawed_back),
        "none clawed back"
    );

    // Every paid reward left the provider exactly once, for its amount;
    // nothing else left it.
    let payouts = &h.harness.sandbox.payouts;
    let mut paid_total = 0;
    for s in &settlements {
        let (made, amount) = match s.rail() {
            kvitto::settlement::Rail::Stripe => {
                let made = payouts.made(PayoutOp::StripePayout, &s.id.to_string());
                let amount = s
                    .provider_ref
                    .as_deref()
                    .and_then(|r| payouts.object(r))
                    .and_then(|o| o["payout"]["amount"].as_i64());
                (made, amount)
            }
            kvitto::settlement::Rail::Swish => {
                let uuid = s.id.simple().to_string().to_uppercase();
                let made = payouts.made(PayoutOp::SwishPayout, &uuid);
                let amount = payouts
                    .object(&uuid)
                    .and_then(|o| o["amount"].as_str().map(str::to_string))
                    .map(|a| a.replace('.', "").parse::<i64>().unwrap());
                (made, amount)
            }
        };
        match s.state {
            SettlementState::Paid => {
                assert_eq!(made, 1, "{s:?}");
                assert_eq!(amount, Some(s.amount_minor), "{s:?}");
                paid_total += s.amount_minor;
            }
            SettlementState::Failed => assert!(made <= 1, "{s:?}"),
            SettlementState::Canceled => assert_eq!(made, 0, "{s:?}"),
            other => panic!("settlement left {other:?}: {s:?}"),
        }
    }
    let cleared = ledger::balance(pool, "clearing:stripe").await.unwrap()
        + ledger::balance(pool, "clearing:swish").await.unwrap();
    assert_eq!(-cleared, paid_total, "clearing against payouts made");

    // Budgets and caps held, and each business's budget account says what
    // its paid rewards and fees cost.
    let mut spent: BTreeMap<&str, i64> = BTreeMap::new();
    let mut per_day: HashMap<(&str, &str, &str), i64> = HashMap::new();
    for s in settlements
        .iter()
        .filter(|s| s.state == SettlementState::Paid)
    {
        *spent.entry(&s.business_id).or_default() += s.amount_minor + s.fee_minor;
        *per_day
            .entry((&s.business_id, &s.customer_ref, &s.customer_day))
            .or_default() += s.amount_minor;
    }
    let rules = kvitto::settlement::config::RewardRules::default();
    for (business, total) in &spent {
        assert!(*total <= 300_000, "{business} spent {total}");
        let budget = ledger::balance(pool, &ledger::business_budget(business))
            .await
            .unwrap();
        assert_eq!(budget, *total, "{business}'s budget account");
    }
    for (key, total) in &per_day {
        assert!(*total <= rules.customer_daily_cap_minor, "{key:?}: {total}");
    }
    for s in &settlements {
        assert!(s.amount_minor <= rules.max_reward_minor, "{s:?}");
    }

    // The topic tells each settlement's story in order, and its last word
    // is the settlement's state.
    let mut last: HashMap<String, (i64, String)> = HashMap::new();
    let mut seen: HashMap<String, Value> = HashMap::new();
    let events = h.settlement_events().await;
    eprintln!(
        "randomized run: {} events on the settlements topic",
        events.len()
    );
    for event in events {
        let id = event["id"].as_str().unwrap().to_string();
        if let Some(earlier) = seen.insert(id.clone(), event.clone()) {
            assert_eq!(earlier, event, "{id} published with two contents");
        }
        let data = &event["data"];
        let settlement = data["settlement_id"].as_str().unwrap().to_string();
        let version = data["version"].as_i64().unwrap();
        let state = data["state"].as_str().unwrap().to_string();
        let entry = last.entry(settlement).or_insert((0, String::new()));
        if version > entry.0 {
            *entry = (version, state);
        }
    }
    for s in &settlements {
        let (version, state) = last
            .get(&s.id.to_string())
            .unwrap_or_else(|| panic!("no event for {}", s.id));
        assert_eq!(*version, s.version, "{s:?}");
        assert_eq!(state, s.state.as_str(), "{s:?}");
    }
}

on_both_runtimes!(randomized_run_balances_and_pays_each_purchase_once);
