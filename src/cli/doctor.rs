//! `kvitto doctor`: checks, before (or instead of) starting kvitto, that
//! everything it depends on is in place, and says in plain words what to do
//! about anything that is not.
//!
//! One line per check, `ok` or `FAIL`: the configuration, the database and
//! its migrations, the bus (and, on Kafka, its topics), every integration's
//! provider API credentials (through the same probes as the health
//! monitor), and the listener addresses. The exit code is non-zero when any
//! check failed. Only reads: it creates no file, topic or table, and it
//! never prints a secret (no tokens, passwords or database credentials;
//! Swish and Klarna integrations appear under their label, not their path
//! token).

use std::net::TcpListener;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use kvitto::config::{Config, DatabaseConfig, IntegrationConfig};
use kvitto::health::{self, DownReason, ProbeFailure};
use kvitto::providers::{ApiClient, ProviderKind};
use kvitto::store::Store;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use sqlx::Row as _;

/// The migrations this build expects, to compare with the database's.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long the database and bus checks wait.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One check's verdict: what was checked, and what was found or what to do.
struct Check {
    name: String,
    outcome: Result<String, String>,
}

impl Check {
    fn print(&self) {
        match &self.outcome {
            Ok(found) => println!("ok    {}: {found}", self.name),
            Err(advice) => println!("FAIL  {}: {advice}", self.name),
        }
    }
}

/// Runs every check, printing each as it finishes. `config` is the result of
/// loading the configuration, which is itself the first check.
pub async fn run(config: Result<Config, String>, source: &str) -> ExitCode {
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            Check {
                name: "config".into(),
                outcome: Err(format!("{error} - fix the named key in {source}")),
            }
            .print();
            println!("1 check failed");
            return ExitCode::FAILURE;
        }
    };
    let mut checks = vec![Check {
        name: "config".into(),
        outcome: Ok(format!("valid ({source})")),
    }];
    checks[0].print();

    let mut record = |check: Check| {
        check.print();
        checks.push(check);
    };
    record(database(&config.database).await);
    record(bus(&config).await);
    let client = ApiClient::try_new(&config.processing);
    for integration in &config.integrations {
        record(integration_check(client.as_ref().ok(), integration, &config).await);
    }
    record(payout_rails(&config));
    for (key, address) in [
        ("server.webhook_listen", &config.server.webhook_listen),
        ("server.admin_listen", &config.server.admin_listen),
    ] {
        record(listener(key, address));
    }

    let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", checks.len());
        ExitCode::FAILURE
    }
}

/// The payout rails can be built from their settings: the Stripe key is
/// set, the Swish signing key reads and the callback URL is acceptable.
/// Nothing is sent to the providers.
fn payout_rails(config: &Config) -> Check {
    let settlement = &config.settlement;
    let configured: Vec<&str> = [
        settlement.stripe.as_ref().map(|_| "stripe"),
        settlement.swish.as_ref().map(|_| "swish"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let outcome = match kvitto::settlement::rails::Rails::try_new(settlement) {
        Ok(_) if configured.is_empty() => Ok(
            "none configured: rewards stay pending until [settlement.stripe] or [settlement.swish] is set"
                .to_string(),
        ),
        Ok(_) => Ok(format!("{} ready", configured.join(" and "))),
        Err(error) => Err(format!("{error} - fix the [settlement] section")),
    };
    Check {
        name: "payout rails".into(),
        outcome,
    }
}

/// The database answers and has every migration of this build applied.
async fn database(config: &DatabaseConfig) -> Check {
    // Only the host part: the URL's user info may hold a password.
    let place = config
        .url
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    let name = format!("database {place}");
    if let Some(path) = sqlite_path(&config.url)
        && !Path::new(path).exists()
    {
        return Check {
            name,
            outcome: Err("the file does not exist yet - run `kvitto migrate` to create it".into()),
        };
    }
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, migrations(config)).await {
        Ok(outcome) => outcome,
        Err(_) => Err("no answer within 5 s - is the database running and reachable?".into()),
    };
    Check { name, outcome }
}

async fn migrations(config: &DatabaseConfig) -> Result<String, String> {
    let store = Store::connect(config)
        .await
        .map_err(|e| format!("cannot connect ({e}) - check database.url and that it runs"))?;
    store
        .check()
        .await
        .map_err(|e| format!("not answering ({e})"))?;
    let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_all(store.pool())
        .await
        .unwrap_or_default();
    let applied: Vec<i64> = rows
        .iter()
        .filter_map(|row| row.try_get::<i64, _>("version").ok())
        .collect();
    let pending = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .count();
    if pending > 0 {
        return Err(format!(
            "reachable, but {pending} migration(s) not applied - run `kvitto migrate`"
        ));
    }
    Ok(format!("reachable, {} migration(s) applied", applied.len()))
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest))
}

/// Kafka answers a metadata request and has every topic kvitto uses; or the
/// embedded bus file opens.
async fn bus(config: &Config) -> Check {
    if !config.bus.is_kafka() {
        let path = config.bus.embedded_path.clone();
        let name = format!("bus (embedded, {})", path.display());
        if !path.exists() {
            return Check {
                name,
                outcome: Ok("not created yet; `kvitto serve` creates it".into()),
            };
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true);
        let outcome = match sqlx::SqlitePool::connect_with(options).await {
            Ok(pool) => sqlx::query("SELECT 1 FROM bus_messages LIMIT 1")
                .fetch_optional(&pool)
                .await
                .map(|_| "opens".to_string())
                .map_err(|e| format!("file does not read as kvitto's bus ({e})")),
            Err(error) => Err(format!("cannot open ({error}) - check bus.embedded_path")),
        };
        return Check { name, outcome };
    }
    let name = format!("bus (kafka, {})", config.bus.brokers);
    let brokers = config.bus.brokers.clone();
    let metadata = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("client.id", "kvitto-doctor")
            .create()
            .map_err(|e| e.to_string())?;
        let metadata = consumer
            .fetch_metadata(None, CHECK_TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .collect())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|result| result);
    let outcome = match metadata {
        Err(error) => Err(format!(
            "brokers do not answer ({error}) - check bus.brokers and the network"
        )),
        Ok(present) => {
            let missing: Vec<String> = kvitto::app::topics(config)
                .into_iter()
                .filter(|topic| !present.contains(topic))
                .collect();
            if missing.is_empty() {
                Ok("reachable, every topic present".into())
            } else {
                Err(format!(
                    "reachable, but topics missing: {} - `kvitto serve` creates them at start \
                     when the broker allows it; otherwise create them",
                    missing.join(", ")
                ))
            }
        }
    };
    Check { name, outcome }
}

/// The integration's provider API answers and accepts its credentials.
async fn integration_check(
    client: Option<&ApiClient>,
    integration: &IntegrationConfig,
    config: &Config,
) -> Check {
    let name = format!(
        "integration {}/{} ({}/{})",
        integration.provider,
        health::integration_label(integration),
        integration.business_id,
        integration.location_id
    );
    if !health::is_probed(integration) {
        return Check {
            name,
            outcome: Ok("not checked: signature-only verification calls no provider API".into()),
        };
    }
    let Some(client) = client else {
        return Check {
            name,
            outcome: Err("the provider API client could not be built".into()),
        };
    };
    let timeout = Duration::from_millis(config.processing.api_timeout_ms);
    let result = match tokio::time::timeout(timeout, health::probe(client, integration)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeFailure::new(
            DownReason::Timeout,
            "no answer within the api timeout",
        )),
    };
    let outcome = match result {
        Ok(()) => Ok("provider API reachable, credentials accepted".into()),
        Err(failure) => Err(format!("{failure} - {}", advice(integration, &failure))),
    };
    Check { name, outcome }
}

/// What to do about a failed probe, naming the keys to look at.
fn advice(integration: &IntegrationConfig, failure: &ProbeFailure) -> &'static str {
    match failure.reason {
        DownReason::CredentialsRejected => match integration.provider {
            ProviderKind::Klarna => "check the integration's api_username and api_password",
            ProviderKind::Zettle => {
                "check the integration's api_username (client id) and api_token (API key)"
            }
            ProviderKind::Swish => "check the integration's client certificate and key",
            _ => "check the integration's api_token",
        },
        DownReason::Unreachable => {
            "check the integration's api_base_url and the network path to the provider"
        }
        DownReason::Timeout => {
            "the provider did not answer within processing.api_timeout_ms; check the network path"
        }
        DownReason::UnexpectedStatus => {
            "check that api_base_url points at the provider's API, and the provider's status page"
        }
        DownReason::Misconfigured => "complete the integration's configuration",
    }
}

/// The address can be bound now (it cannot while kvitto itself runs).
fn listener(key: &str, address: &str) -> Check {
    let outcome = match TcpListener::bind(address) {
        Ok(_) => Ok("can be bound".into()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "{address} is in use - is kvitto (or something else) already listening there? \
             Change {key} or stop it"
        )),
        Err(error) => Err(format!("cannot bind {address} ({error}) - change {key}")),
    };
    Check {
        name: format!("listener {key} {address}"),
        outcome,
    }
}
