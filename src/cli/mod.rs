//! Subcommands: `serve` (the default), `migrate`, `check-config`, `doctor`,
//! `simulate`, `sign`, `transactions`, `settlements`, `ledger` and
//! `deadletter`.

mod deadletter;
mod doctor;
mod money;
mod sign;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kvitto::config::Config;
use kvitto::sandbox::simulate::SimulateOptions;
use kvitto::store::Store;
use kvitto::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "kvitto",
    version,
    about = "Signed provider webhooks in, verified transactions out, rewards paid once"
)]
pub struct Args {
    /// Configuration file (default: config/kvitto.toml when present).
    #[arg(long, short, global = true, env = "KVITTO_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print a summary, and exit.
    CheckConfig,
    /// Check the configuration, database, bus, every integration's provider
    /// credentials and the listener addresses; exit non-zero if any fails.
    Doctor,
    /// Play the providers and the feedback service: serve their APIs (payouts
    /// too), send signed webhooks, then scored feedback, and follow each
    /// reward to its end.
    Simulate(SimulateArgs),
    /// Print the signature header value a provider would send.
    Sign(sign::SignArgs),
    /// List the most recently changed settlements and the totals by state.
    Settlements {
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Read the last events on the settlements topic instead.
        #[arg(long)]
        events: bool,
    },
    /// Print the ledger's balances and check that it balances (exit 1 when
    /// it does not).
    Ledger,
    /// List, show and replay dead letters.
    #[command(subcommand)]
    Deadletter(deadletter::DeadletterCommand),
    /// List the most recently changed transactions.
    Transactions {
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Purchases to send webhooks for.
    #[arg(long, default_value_t = 70)]
    count: usize,
    /// Webhooks per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Providers to play, comma separated (default: every configured one).
    #[arg(long, value_enum, value_delimiter = ',')]
    providers: Vec<kvitto::providers::ProviderKind>,
    /// Share of webhooks sent twice, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Share of Square purchases whose update is sent before their creation.
    #[arg(long, default_value_t = 0.0)]
    out_of_order: f64,
    /// Share of webhooks sent with a broken signature (expected: 401).
    #[arg(long, default_value_t = 0.0)]
    bad_signatures: f64,
    /// Seed of the generated purchases (default: a new one each run, printed).
    /// The same seed again makes the same purchases, which kvitto already
    /// has and does not look up again.
    #[arg(long)]
    seed: Option<u64>,
    /// How long to wait for kvitto to look every purchase up, and again to
    /// settle every reward.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
    /// Share of completed purchases that get scored feedback, 0.0 to 1.0
    /// (0 sends none).
    #[arg(long, default_value_t = 0.6)]
    feedback: f64,
    /// Share of feedback whose payout the provider refuses, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    failing_payouts: f64,
    /// Only serve the provider APIs, send nothing.
    #[arg(long)]
    serve_only: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let command = args.command.unwrap_or(Command::Serve);
    if let Command::Sign(sign_args) = &command {
        return sign::run(sign_args, args.config.as_deref());
    }
    if let Command::Doctor = command {
        // The doctor reports a configuration that does not load as a failed
        // check of its own, so it loads the file itself.
        let default_file = std::path::Path::new("config/kvitto.toml");
        let source = match &args.config {
            Some(path) => path.display().to_string(),
            None if default_file.exists() => default_file.display().to_string(),
            None => "built-in defaults".to_string(),
        };
        let config = Config::load(args.config.as_deref()).map_err(|e| e.to_string());
        let system = actix_rt::System::new();
        return Ok(system.block_on(doctor::run(config, &source)));
    }
    let config = Config::load(args.config.as_deref()).context("loading configuration")?;
    telemetry::logging::init(&config.log);
    let system = actix_rt::System::new();
    system.block_on(async move {
        match command {
            Command::Serve => kvitto::app::serve(config).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate => migrate(&config).await,
            Command::CheckConfig => check_config(&config),
            Command::Simulate(options) => simulate(config, options).await,
            Command::Transactions { limit, json } => transactions(&config, limit, json).await,
            Command::Settlements {
                limit,
                json,
                events,
            } => money::settlements(&config, limit, json, events).await,
            Command::Ledger => money::ledger(&config).await,
            Command::Deadletter(command) => deadletter::run(&config, command).await,
            Command::Sign(_) | Command::Doctor => {
                unreachable!("handled before the runtime starts")
            }
        }
    })
}

async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    let bus = if config.bus.is_kafka() {
        format!("kafka ({})", config.bus.brokers)
    } else {
        format!("embedded ({})", config.bus.embedded_path.display())
    };
    let database = config
        .database
        .url
        .split('@')
        .next_back()
        .unwrap_or_default();
    println!("configuration is valid");
    println!(
        "  webhooks on {}, admin on {}",
        config.server.webhook_listen, config.server.admin_listen
    );
    println!("  bus: {bus}");
    println!("  database: {database}");
    let settlement = &config.settlement;
    let rails: Vec<&str> = [
        settlement.stripe.as_ref().map(|_| "stripe"),
        settlement.swish.as_ref().map(|_| "swish"),
    ]
    .into_iter()
    .flatten()
    .collect();
    println!(
        "  settlement: {}, payout rails: {}, {} business keys, {} staff keys",
        if settlement.enabled { "on" } else { "off" },
        if rails.is_empty() {
            "none".to_string()
        } else {
            rails.join(", ")
        },
        settlement.api_keys.len(),
        settlement.staff_keys.len()
    );
    for integration in &config.integrations {
        println!(
            "  integration {} ({}, {}) -> {}/{}",
            integration.id,
            integration.provider,
            integration.verification.as_str(),
            integration.business_id,
            integration.location_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn simulate(config: Config, args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let options = SimulateOptions {
        count: args.count,
        rate: args.rate,
        providers: args.providers,
        duplicates: args.duplicates,
        out_of_order: args.out_of_order,
        bad_signatures: args.bad_signatures,
        seed: args.seed.unwrap_or_else(|| {
            let seed = rand::random::<u32>().into();
            println!("seed {seed} (--seed {seed} makes the same purchases again)");
            seed
        }),
        wait_secs: args.wait_secs,
        feedback: args.feedback,
        failing_payouts: args.failing_payouts,
        serve_only: args.serve_only,
    };
    kvitto::sandbox::simulate::simulate(config, options).await?;
    Ok(ExitCode::SUCCESS)
}

async fn transactions(config: &Config, limit: i64, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&config.database)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    let transactions = store.recent_transactions(limit).await?;
    if json {
        for transaction in &transactions {
            println!("{}", serde_json::to_string(transaction)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<8} {:<26} {:>12} {:<4} {:<10} {:<9} provider id",
        "occurred (Stockholm)",
        "provider",
        "business/location",
        "amount",
        "cur",
        "state",
        "verdict"
    );
    for t in &transactions {
        let local = t
            .occurred_at_local
            .get(..19)
            .unwrap_or(&t.occurred_at_local);
        let place = format!("{}/{}", t.business_id, t.location_id);
        let amount = kvitto::money::format_minor(t.amount_minor, &t.currency);
        println!(
            "{:<24} {:<8} {:<26} {:>12} {:<4} {:<10} {:<9} {}",
            local,
            t.provider.as_str(),
            place,
            amount,
            t.currency,
            t.state.as_str(),
            t.verdict.as_str(),
            t.provider_transaction_id
        );
    }
    println!(
        "{} of {} transactions",
        transactions.len(),
        store.count_transactions().await?
    );
    Ok(ExitCode::SUCCESS)
}
