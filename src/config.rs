//! kvitto's configuration: one typed struct, loaded from a TOML file and
//! overridden by `KVITTO_`-prefixed environment variables.
//!
//! Unknown keys are rejected with an error naming the key, every field has a
//! default in code (mirrored in `config/kvitto.example.toml`), and the whole
//! is validated at load so a bad config fails at start-up, not on the first
//! webhook. Nested keys use a double underscore in the environment:
//! `KVITTO_BUS__BROKERS=host:9092`, `KVITTO_DATABASE__URL=postgres://...`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::canonical::VerificationMode;
use crate::providers::ProviderKind;
pub use crate::settlement::config::SettlementConfig;

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "KVITTO_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub processing: ProcessingConfig,
    pub sandbox: SandboxConfig,
    pub settlement: SettlementConfig,
    pub integrations: Vec<IntegrationConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where providers deliver webhooks.
    pub webhook_listen: String,
    /// Metrics, health and readiness; keep it off the public network.
    pub admin_listen: String,
    /// Bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// HTTP worker threads for the webhook listener; 0 means one per core.
    pub workers: usize,
    /// The deadline of the whole graceful shutdown, every step together.
    pub shutdown_timeout_secs: u64,
    /// How long a client may take to send a request's head, and then its
    /// body; slower clients get 408.
    pub request_timeout_ms: u64,
    /// Webhooks being read or written at once; more get 503 with
    /// Retry-After. Bounds the memory bodies can take to about this many
    /// times `max_body_bytes`.
    pub max_inflight_webhooks: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            webhook_listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9464".into(),
            max_body_bytes: 1024 * 1024,
            workers: 0,
            shutdown_timeout_secs: 30,
            request_timeout_ms: 10_000,
            max_inflight_webhooks: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `kvitto=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/kvitto.sqlite".into(),
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Kafka bootstrap servers (`host:port,...`). Empty selects the embedded
    /// durable bus.
    pub brokers: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// The consumer group of all kvitto instances: every provider's webhook
    /// topic is consumed by this group, and `kvitto.feedback` by
    /// `<consumer_group>-settlement`.
    pub consumer_group: String,
    /// Partitions for topics kvitto creates when they are missing.
    pub partitions: i32,
    /// Replication factor for topics kvitto creates.
    pub replication_factor: i32,
    /// How long a webhook waits for the bus to confirm its write before the
    /// provider is told 503.
    pub publish_timeout_ms: u64,
    /// The embedded bus's SQLite file.
    pub embedded_path: PathBuf,
    /// Embedded bus only: messages older than this are deleted, mirroring
    /// Kafka's time-based retention; on webhook topics only once every
    /// consumer group has committed them. 0 keeps messages forever.
    pub embedded_retention_hours: u64,
    /// Kafka: how long the group waits for a silent consumer (a crashed
    /// instance) before giving its partitions to another.
    pub session_timeout_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            brokers: String::new(),
            topic_prefix: "kvitto.".into(),
            consumer_group: "kvitto".into(),
            partitions: 6,
            replication_factor: 1,
            publish_timeout_ms: 5_000,
            embedded_path: PathBuf::from("data/bus.sqlite"),
            embedded_retention_hours: 168,
            session_timeout_ms: 10_000,
        }
    }
}

impl BusConfig {
    pub fn is_kafka(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    pub fn webhook_topic(&self, provider: ProviderKind) -> String {
        format!("{}webhooks.{}", self.topic_prefix, provider)
    }

    pub fn transactions_topic(&self) -> String {
        format!("{}transactions", self.topic_prefix)
    }

    pub fn deadletter_topic(&self) -> String {
        format!("{}deadletter", self.topic_prefix)
    }

    /// Scored feedback from the feedback service (and `POST /v1/feedback`).
    pub fn feedback_topic(&self) -> String {
        format!("{}feedback", self.topic_prefix)
    }

    /// Every settlement state change, for analytics.
    pub fn settlements_topic(&self) -> String {
        format!("{}settlements", self.topic_prefix)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// Amounts differing by at most this many minor units still match.
    pub amount_tolerance_minor: i64,
    /// Timeout of one provider API call.
    pub api_timeout_ms: u64,
    /// Retries of one provider API call within one processing attempt.
    pub api_max_retries: usize,
    /// First backoff delay; it doubles, with jitter, up to `api_max_backoff_ms`.
    pub api_min_backoff_ms: u64,
    pub api_max_backoff_ms: u64,
    /// Longest `Retry-After` kvitto honours from a 429 before it treats the
    /// call as failed for this attempt.
    pub api_max_retry_after_secs: u64,
    /// Processing attempts of one event (failed transiently or panicked)
    /// before it is dead-lettered instead of retried.
    pub max_attempts: u32,
    /// Pause between processing attempts of an event that failed transiently.
    pub retry_pause_ms: u64,
    /// How often each integration's provider API is checked for reachability
    /// and accepted credentials (`kvitto_integration_up`, `/readyz`).
    pub integration_check_interval_secs: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            amount_tolerance_minor: 1,
            api_timeout_ms: 5_000,
            api_max_retries: 4,
            api_min_backoff_ms: 100,
            api_max_backoff_ms: 5_000,
            api_max_retry_after_secs: 60,
            max_attempts: 10,
            retry_pause_ms: 1_000,
            integration_check_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Where `kvitto simulate` serves the providers' APIs.
    pub listen: String,
    /// The kvitto webhook base URL the simulator delivers to.
    pub target_url: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: "127.0.0.1:8090".into(),
            target_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// How the generic adapter encodes its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// What the generic adapter signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignedPayload {
    /// The raw body.
    Body,
    /// The timestamp header's value, a `.`, then the raw body.
    TimestampDotBody,
}

/// One merchant's connection to one provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// The `{integration}` path segment. For Swish and Klarna, whose
    /// callbacks are unsigned, it must be an unguessable token.
    pub id: String,
    pub provider: ProviderKind,
    pub business_id: String,
    pub location_id: String,
    /// Webhook signing secrets; any one of them is accepted, so a secret can
    /// be rotated by adding the new one before removing the old.
    #[serde(default)]
    pub signing_secrets: Vec<String>,
    /// Square: the notification URL exactly as registered with Square.
    #[serde(default)]
    pub notification_url: Option<String>,
    /// Stripe and generic: how far a signed timestamp may be from now.
    #[serde(default = "default_tolerance_secs")]
    pub timestamp_tolerance_secs: i64,
    #[serde(default = "default_verification")]
    pub verification: VerificationMode,
    /// The provider's own id of the merchant location this integration
    /// stands for. When set, a transaction the provider places at another
    /// location is `rejected` (`location_mismatch`).
    #[serde(default)]
    pub provider_location_id: Option<String>,
    /// Base URL of the provider's API (the sandbox's in the demo config).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Zettle: base URL of the OAuth server (defaults to `api_base_url`).
    #[serde(default)]
    pub oauth_base_url: Option<String>,
    /// Bearer token (Square, Stripe secret key), access token (Shopify) or
    /// API key (Zettle's assertion).
    #[serde(default)]
    pub api_token: Option<String>,
    /// Zettle client id; Klarna and other basic-auth APIs: user name.
    #[serde(default)]
    pub api_username: Option<String>,
    /// Basic-auth password (Klarna).
    #[serde(default)]
    pub api_password: Option<String>,
    /// Swish: PEM client certificate and key for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Generic: header carrying the signature.
    #[serde(default)]
    pub signature_header: Option<String>,
    #[serde(default)]
    pub signature_encoding: Option<SignatureEncoding>,
    #[serde(default)]
    pub signed_payload: Option<SignedPayload>,
    /// Generic with `timestamp-dot-body`: header carrying the unix timestamp.
    #[serde(default)]
    pub timestamp_header: Option<String>,
}

fn default_tolerance_secs() -> i64 {
    300
}

fn default_verification() -> VerificationMode {
    VerificationMode::Api
}

impl IntegrationConfig {
    /// The API base URL without a trailing slash.
    pub fn api_base(&self) -> &str {
        self.api_base_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/')
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Figment's own words, which name the key and where it came from.
    #[error("{0}")]
    Load(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `KVITTO_SECTION__KEY` variables. Only names with the `__` separator are
/// read, so other variables that share the prefix (`KVITTO_CONFIG`, a test
/// harness's own) are not mistaken for unknown keys.
fn env_overrides() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

impl Config {
    /// Loads defaults, then the file (when it exists or was asked for), then
    /// the environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(path) => {
                if !path.exists() {
                    return Err(invalid(
                        "config",
                        format!("file {} not found", path.display()),
                    ));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("config/kvitto.toml")),
        }
        figment = figment.merge(env_overrides());
        Self::from_figment(figment)
    }

    /// Parses a TOML document alone (tests and `check-config`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|error| {
            // Figment chains one error per source that failed, often the same
            // complaint twice; the first says it all.
            let first = error.into_iter().next().map(|e| e.to_string());
            ConfigError::Load(first.unwrap_or_else(|| "configuration is invalid".into()))
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn integration(&self, provider: ProviderKind, id: &str) -> Option<&IntegrationConfig> {
        self.integrations
            .iter()
            .find(|i| i.provider == provider && i.id == id)
    }

    /// Providers that have at least one integration.
    pub fn active_providers(&self) -> Vec<ProviderKind> {
        let mut providers: Vec<_> = self.integrations.iter().map(|i| i.provider).collect();
        providers.sort();
        providers.dedup();
        providers
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        for (key, address) in [
            ("server.webhook_listen", &self.server.webhook_listen),
            ("server.admin_listen", &self.server.admin_listen),
            ("sandbox.listen", &self.sandbox.listen),
        ] {
            if std::net::ToSocketAddrs::to_socket_addrs(address.as_str()).is_err() {
                return Err(invalid(
                    key,
                    format!("{address:?} is not a host:port address"),
                ));
            }
        }
        if self.server.max_inflight_webhooks == 0 {
            return Err(invalid(
                "server.max_inflight_webhooks",
                "must be at least 1",
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        if self.bus.partitions < 1 {
            return Err(invalid("bus.partitions", "must be at least 1"));
        }
        if self.processing.max_attempts < 1 {
            return Err(invalid("processing.max_attempts", "must be at least 1"));
        }
        if self.processing.integration_check_interval_secs == 0 {
            return Err(invalid(
                "processing.integration_check_interval_secs",
                "must be greater than 0",
            ));
        }
        self.settlement
            .validate()
            .map_err(|(key, reason)| invalid(key, reason))?;
        let mut seen = HashSet::new();
        for (index, integration) in self.integrations.iter().enumerate() {
            let key = |field: &str| format!("integrations[{index}].{field}");
            if !seen.insert((integration.provider, integration.id.as_str())) {
                return Err(invalid(
                    key("id"),
                    format!("duplicate integration {}", integration.id),
                ));
            }
            validate_integration(integration, key)?;
        }
        Ok(())
    }
}

fn validate_integration(
    integration: &IntegrationConfig,
    key: impl Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let id = &integration.id;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            key("id"),
            "must be non-empty ASCII letters, digits, - or _",
        ));
    }
    let unsigned = matches!(
        integration.provider,
        ProviderKind::Swish | ProviderKind::Klarna
    );
    if unsigned && id.len() < 24 {
        return Err(invalid(
            key("id"),
            "unsigned providers need an unguessable id of 24+ characters",
        ));
    }
    if !unsigned && integration.signing_secrets.iter().all(|s| s.is_empty()) {
        return Err(invalid(
            key("signing_secrets"),
            "at least one non-empty secret is required",
        ));
    }
    if integration.timestamp_tolerance_secs < 0 {
        return Err(invalid(
            key("timestamp_tolerance_secs"),
            "must not be negative",
        ));
    }
    let needs_api = integration.verification == VerificationMode::Api || unsigned;
    if needs_api && integration.api_base_url.as_deref().unwrap_or("").is_empty() {
        return Err(invalid(
            key("api_base_url"),
            "required for api verification",
        ));
    }
    match integration.provider {
        ProviderKind::Square if integration.notification_url.is_none() => {
            Err(invalid(key("notification_url"), "required for square"))
        }
        ProviderKind::Generic if integration.signature_header.is_none() => {
            Err(invalid(key("signature_header"), "required for generic"))
        }
        ProviderKind::Generic
            if integration.signed_payload == Some(SignedPayload::TimestampDotBody)
                && integration.timestamp_header.is_none() =>
        {
            Err(invalid(
                key("timestamp_header"),
                "required with signed_payload = timestamp-dot-body",
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's own test jail error type
    fn environment_overrides_nested_keys_and_ignores_other_prefixed_names() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KVITTO_BUS__BROKERS", "127.0.0.1:9092");
            jail.set_env("KVITTO_CONFIG", "elsewhere.toml");
            jail.set_env("KVITTO_SERVER__MAX_BODY_BYTES", "2048");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.bus.brokers, "127.0.0.1:9092");
            assert_eq!(config.server.max_body_bytes, 2048);
            jail.set_env("KVITTO_BUS__BROKRS", "x");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("brokrs"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let error = Config::from_toml("[server]\nwebhook_listn = \"x\"\n").unwrap_err();
        assert!(error.to_string().contains("webhook_listn"), "{error}");
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = std::fs::read_to_string("config/kvitto.toml").unwrap();
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(config.active_providers().len(), ProviderKind::ALL.len());
    }

    #[test]
    fn example_config_is_valid() {
        let text = std::fs::read_to_string("config/kvitto.example.toml").unwrap();
        Config::from_toml(&text).unwrap();
    }

    #[test]
    fn example_config_shows_the_settlement_defaults() {
        let text = std::fs::read_to_string("config/kvitto.example.toml").unwrap();
        let example = Config::from_toml(&text).unwrap().settlement;
        let defaults = crate::settlement::config::SettlementConfig::default();
        assert_eq!(example.defaults, defaults.defaults);
        let timings = |c: &crate::settlement::config::SettlementConfig| {
            (
                c.enabled,
                c.match_window_secs,
                c.amount_tolerance_minor,
                c.match_deadline_secs,
                c.tick_ms,
                c.reconcile_after_secs,
                c.first_status_check_secs,
                c.retry_min_pause_ms,
                c.retry_max_pause_secs,
                c.lease_secs,
                c.rail_timeout_ms,
            )
        };
        assert_eq!(timings(&example), timings(&defaults));
    }

    #[test]
    fn listen_address_that_is_not_host_port_names_the_key() {
        let error = Config::from_toml("[server]\nwebhook_listen = \"notanaddr\"\n").unwrap_err();
        assert!(
            error.to_string().starts_with("server.webhook_listen"),
            "{error}"
        );
    }

    #[test]
    fn zero_integration_check_interval_names_the_key() {
        let error =
            Config::from_toml("[processing]\nintegration_check_interval_secs = 0\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "processing.integration_check_interval_secs: must be greater than 0"
        );
    }

    #[test]
    fn square_without_notification_url_names_the_key() {
        let text = r#"
            [[integrations]]
            id = "sq"
            provider = "square"
            business_id = "b"
            location_id = "l"
            signing_secrets = ["k"]
            verification = "signature-only"
        "#;
        let error = Config::from_toml(text).unwrap_err();
        assert_eq!(
            error.to_string(),
            "integrations[0].notification_url: required for square"
        );
    }

    #[test]
    fn short_klarna_token_is_rejected() {
        let text = r#"
            [[integrations]]
            id = "klarna"
            provider = "klarna"
            business_id = "b"
            location_id = "l"
            api_base_url = "http://127.0.0.1:1"
        "#;
        let error = Config::from_toml(text).unwrap_err();
        assert!(
            error.to_string().starts_with("integrations[0].id"),
            "{error}"
        );
    }
}
