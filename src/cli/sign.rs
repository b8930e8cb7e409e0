//! `kvitto sign`: prints exactly the signature header value a provider would
//! send for a body, so a merchant's developer can compare it with what their
//! POS sends. Only the value goes to stdout, so scripts can use it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kvitto::config::{Config, IntegrationConfig};
use kvitto::providers::{ProviderKind, generic, shopify, square, stripe, zettle};

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    #[arg(long, value_enum)]
    provider: ProviderKind,
    /// The signing secret (Stripe: the whole `whsec_...` string).
    #[arg(long, required_unless_present = "integration")]
    secret: Option<String>,
    /// The file holding the exact body (Zettle: the whole envelope).
    #[arg(long)]
    body_file: PathBuf,
    /// Square: the notification URL exactly as registered.
    #[arg(long)]
    url: Option<String>,
    /// Stripe and generic: the unix timestamp to sign with.
    #[arg(long)]
    timestamp: Option<i64>,
    /// Generic: the configured integration whose header, encoding and
    /// signed content to use (its first secret unless --secret is given).
    #[arg(long)]
    integration: Option<String>,
}

pub fn run(args: &SignArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(&args.body_file)
        .with_context(|| format!("reading {}", args.body_file.display()))?;
    let value = header_value(args, &body, config_path)?;
    println!("{value}");
    Ok(ExitCode::SUCCESS)
}

fn header_value(
    args: &SignArgs,
    body: &[u8],
    config_path: Option<&Path>,
) -> anyhow::Result<String> {
    let secret = || args.secret.as_deref().context("--secret is required");
    Ok(match args.provider {
        ProviderKind::Square => {
            let url = args
                .url
                .as_deref()
                .context("--url is required for square")?;
            square::signature::sign(secret()?, url, body)
        }
        ProviderKind::Stripe => {
            let timestamp = args
                .timestamp
                .context("--timestamp is required for stripe")?;
            stripe::signature::sign(secret()?, timestamp, body)
        }
        ProviderKind::Shopify => shopify::signature::sign(secret()?, body),
        ProviderKind::Zettle => zettle::signature::sign(secret()?, body)
            .map_err(|error| anyhow::anyhow!("the body is not a Zettle envelope: {error}"))?,
        ProviderKind::Generic => {
            let mut integration = configured_generic(args, config_path)?;
            if let Some(secret) = &args.secret {
                integration.signing_secrets = vec![secret.clone()];
            }
            let timestamp = args
                .timestamp
                .unwrap_or_else(|| chrono::Utc::now().timestamp());
            generic::signature::sign(&integration, timestamp, body)
        }
        ProviderKind::Swish | ProviderKind::Klarna => {
            bail!(
                "{} callbacks are not signed; their integration path token is the gate",
                args.provider
            )
        }
    })
}

fn configured_generic(
    args: &SignArgs,
    config_path: Option<&Path>,
) -> anyhow::Result<IntegrationConfig> {
    let id = args
        .integration
        .as_deref()
        .context("--integration is required for generic")?;
    let config = Config::load(config_path).context("loading configuration")?;
    config
        .integration(ProviderKind::Generic, id)
        .cloned()
        .with_context(|| format!("no generic integration {id} in the configuration"))
}
