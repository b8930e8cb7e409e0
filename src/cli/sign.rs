//! `kvitto sign`: prints exactly the signature header value a provider would
//! send for a body, so a merchant's developer can compare it with what their
//! POS sends. Only the value goes to stdout, so scripts can use it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use kvitto::providers::ProviderKind;

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    #[arg(long)]
    provider: ProviderKind,
    /// The signing secret (Stripe: the whole `whsec_...` string).
    #[arg(long)]
    secret: String,
    /// The file holding the exact body (Zettle: the whole envelope).
    #[arg(long)]
    body_file: PathBuf,
    /// Square: the notification URL exactly as registered.
    #[arg(long)]
    url: Option<String>,
    /// Stripe and generic: the unix timestamp to sign with.
    #[arg(long)]
    timestamp: Option<i64>,
}

pub fn run(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(&args.body_file)
        .with_context(|| format!("reading {}", args.body_file.display()))?;
    let _ = body;
    anyhow::bail!("signing for {} is not wired yet", args.provider)
}
