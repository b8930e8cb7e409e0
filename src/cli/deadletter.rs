//! `kvitto deadletter list|show|replay`: what failed, why, and sending it
//! through the pipeline again once the cause is fixed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kvitto::bus::Bus;
use kvitto::config::Config;
use kvitto::deadletter::{self, Filter, StoredLetter};

#[derive(Debug, clap::Subcommand)]
pub enum DeadletterCommand {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full (the body decoded when it is text).
    Show {
        /// The kvitto event id.
        event_id: String,
    },
    /// Send dead letters through the pipeline again. Idempotent: an event
    /// already processed is recognised and changes nothing.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// Replay every dead letter (required when no filter is given).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only this provider's.
    #[arg(long)]
    provider: Option<String>,
    /// Only this reason's (undecodable, provider_api, attempts_exhausted, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only this kvitto event id.
    #[arg(long)]
    event_id: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            provider: self.provider.clone(),
            reason: self.reason.clone(),
            event_id: self.event_id.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.provider.is_none() && self.reason.is_none() && self.event_id.is_none()
    }
}

pub async fn run(config: &Config, command: DeadletterCommand) -> anyhow::Result<ExitCode> {
    let bus = Bus::connect(&config.bus, &[])
        .await
        .context("connecting to the bus")?;
    match command {
        DeadletterCommand::List { filter, json } => {
            let letters = deadletter::list(&bus, &config.bus, &filter.filter()).await?;
            print_list(&letters, json)?;
        }
        DeadletterCommand::Show { event_id } => {
            let filter = Filter {
                event_id: Some(event_id.clone()),
                ..Filter::default()
            };
            let letters = deadletter::list(&bus, &config.bus, &filter).await?;
            let Some(stored) = letters.last() else {
                bail!("no dead letter with event id {event_id}")
            };
            println!("{}", serde_json::to_string_pretty(&stored.letter)?);
            if let Some(text) = body_text(&stored.letter.body_base64) {
                println!("body:\n{text}");
            }
        }
        DeadletterCommand::Replay { filter, all } => {
            if filter.is_empty() && !all {
                bail!("say what to replay: --provider, --reason, --event-id, or --all");
            }
            let letters = deadletter::list(&bus, &config.bus, &filter.filter()).await?;
            let timeout = Duration::from_millis(config.bus.publish_timeout_ms);
            let replayed = deadletter::replay(&bus, &letters, timeout).await?;
            println!("replayed {replayed} dead letters");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(letters: &[StoredLetter], json: bool) -> anyhow::Result<()> {
    if json {
        for stored in letters {
            println!("{}", serde_json::to_string(&stored.letter)?);
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<36} {:<18} detail",
        "dead-lettered at", "provider", "event id", "reason"
    );
    for stored in letters {
        let letter = &stored.letter;
        let at = letter
            .deadlettered_at
            .get(..19)
            .unwrap_or(&letter.deadlettered_at);
        let detail: String = letter.detail.chars().take(80).collect();
        println!(
            "{at:<24} {:<8} {:<36} {:<18} {detail}",
            letter.provider, letter.event_id, letter.reason
        );
    }
    println!("{} dead letters", letters.len());
    Ok(())
}

fn body_text(body_base64: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body_base64)
        .ok()?;
    String::from_utf8(bytes).ok()
}
