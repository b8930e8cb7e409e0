//! `kvitto settlements` and `kvitto ledger`: where the rewards stand, read
//! from the database and the settlements topic, and the ledger's balances
//! with its proof.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use kvitto::bus::Bus;
use kvitto::config::Config;
use kvitto::money::format_minor;
use kvitto::settlement::engine::settlement_event;
use kvitto::settlement::ledger;
use kvitto::settlement::store as rows;
use kvitto::store::Store;
use serde_json::Value;

/// The most events `--events` reads from the topic.
const MAX_EVENTS: usize = 100_000;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The database a reading command reads, said first: from the wrong
/// directory it would be another (or a new, empty) one.
fn say_database(config: &Config) {
    let url = &config.database.url;
    let shown = match url.split_once('@') {
        Some((scheme_and_user, host)) => {
            let scheme = scheme_and_user.split("://").next().unwrap_or_default();
            format!("{scheme}://…@{host}")
        }
        None => url.clone(),
    };
    eprintln!("database: {shown}");
}

async fn store(config: &Config) -> anyhow::Result<Store> {
    say_database(config);
    let store = Store::connect(&config.database)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// Lists the most recently changed settlements and the totals by state, or
/// with `events`, the last events on the settlements topic.
pub async fn settlements(
    config: &Config,
    limit: i64,
    json: bool,
    events: bool,
) -> anyhow::Result<ExitCode> {
    if events {
        return topic_events(config, limit, json).await;
    }
    let store = store(config).await?;
    let pool = store.pool();
    let recent = rows::recent_settlements(pool, limit).await?;
    if json {
        for settlement in &recent {
            let event: Value = serde_json::from_str(&settlement_event(settlement, None))?;
            let mut data = event["data"].clone();
            // The stored row knows its state, not the one before it.
            if let Some(fields) = data.as_object_mut() {
                fields.remove("previous_state");
            }
            println!("{data}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<20} {:<18} {:<6} {:>9} {:>7} {:<10} provider ref",
        "updated (Stockholm)", "feedback", "business", "rail", "reward", "fee", "state"
    );
    for s in &recent {
        let updated = s
            .updated_at
            .with_timezone(&chrono_tz::Europe::Stockholm)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let mut state = s.state.as_str().to_string();
        if s.clawed_back {
            state.push('*');
        }
        println!(
            "{:<24} {:<20} {:<18} {:<6} {:>9} {:>7} {:<10} {}",
            updated,
            clip(&s.feedback_id, 20),
            clip(&s.business_id, 18),
            s.rail().as_str(),
            format_minor(s.amount_minor, &s.currency),
            format_minor(s.fee_minor, &s.currency),
            state,
            s.provider_ref.as_deref().unwrap_or("-")
        );
    }
    if recent.iter().any(|s| s.clawed_back) {
        println!("* clawed back: the purchase was refunded after the payout");
    }
    println!();
    let feedback = rows::feedback_totals(pool).await?;
    let line = feedback
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("feedback: {}", if line.is_empty() { "none" } else { &line });
    let totals = rows::settlement_totals(pool).await?;
    let all: i64 = totals.iter().map(|t| t.count).sum();
    println!("{} of {all} settlements listed, newest first", recent.len());
    if totals.is_empty() {
        println!("settlements: none");
    }
    for total in &totals {
        println!(
            "settlements {:<10} {:>6}  {:>12} {}",
            total.state,
            total.count,
            format_minor(total.amount_minor, &total.currency),
            total.currency
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The last `limit` events on `kvitto.settlements`, oldest first.
async fn topic_events(config: &Config, limit: i64, json: bool) -> anyhow::Result<ExitCode> {
    if config.bus.is_kafka() {
        eprintln!("bus: kafka ({})", config.bus.brokers);
    } else {
        eprintln!("bus: {}", config.bus.embedded_path.display());
    }
    let bus = Bus::connect(&config.bus, &[])
        .await
        .context("connecting to the bus")?;
    let topic = config.bus.settlements_topic();
    let deliveries = bus
        .read_all(&topic, MAX_EVENTS, READ_TIMEOUT)
        .await
        .with_context(|| format!("reading {topic}"))?;
    let skip = deliveries
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
    if !json {
        println!(
            "{:<10} {:<44} {:<10} {:<10} {:>9} feedback",
            "partition", "event id", "from", "state", "reward"
        );
    }
    for delivery in &deliveries[skip..] {
        if json {
            println!("{}", String::from_utf8_lossy(&delivery.message.payload));
            continue;
        }
        let Ok(event) = serde_json::from_slice::<Value>(&delivery.message.payload) else {
            println!("{:<10} (not JSON)", delivery.partition);
            continue;
        };
        let data = &event["data"];
        let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
        let mut state = text(&data["state"]);
        if data["clawed_back"].as_bool() == Some(true) {
            state.push('*');
        }
        let currency = text(&data["currency"]);
        let reward = data["amount_minor"]
            .as_i64()
            .map(|a| format_minor(a, &currency))
            .unwrap_or_default();
        println!(
            "{:<10} {:<44} {:<10} {:<10} {:>9} {}",
            delivery.partition,
            text(&event["id"]),
            text(&data["previous_state"]),
            state,
            reward,
            text(&data["feedback_id"])
        );
    }
    if !json {
        println!(
            "{} of {} events on {topic}",
            deliveries.len() - skip,
            deliveries.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every account's balance and proves the ledger; exit 1 when the
/// proof fails.
pub async fn ledger(config: &Config) -> anyhow::Result<ExitCode> {
    let store = store(config).await?;
    let pool = store.pool();
    let balances = ledger::balances(pool).await?;
    println!("{:<40} {:>14}", "account", "balance (minor)");
    for (account, balance) in &balances {
        println!("{account:<40} {balance:>14}");
    }
    let total: i64 = balances.iter().map(|(_, b)| b).sum();
    println!("{:<40} {:>14}", "all accounts", total);
    println!("(debits positive, credits negative)");
    let report = ledger::check(pool).await?;
    if report.is_balanced() {
        println!(
            "ledger balanced: every journal sums to zero and every balance agrees with the settlements"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("ledger NOT balanced:");
    for problem in &report.problems {
        println!("  {problem}");
    }
    Ok(ExitCode::FAILURE)
}
