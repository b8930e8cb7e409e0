//! The `[settlement]` section: matching windows, reward rules per business,
//! the payout rails' credentials and the API keys of the feedback service
//! and of review staff.
//!
//! Every amount is in minor units (öre). Businesses without a `[[settlement
//! .businesses]]` entry get `[settlement.defaults]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// Runs matching, payouts and reconciliation. Off, feedback is still
    /// accepted and kept on `kvitto.feedback` for later.
    pub enabled: bool,
    /// A purchase matches feedback that names its time if it happened within
    /// this many seconds either side.
    pub match_window_secs: i64,
    /// Amounts differing by at most this many minor units still match.
    pub amount_tolerance_minor: i64,
    /// Feedback waits this long after it arrived for its purchase's webhook,
    /// then ends as `no_matching_purchase`.
    pub match_deadline_secs: i64,
    /// How often the engine looks for work (waiting feedback, due payouts,
    /// refunds, settlements to reconcile, unpublished events).
    pub tick_ms: u64,
    /// A submitted settlement with no final answer after this long has its
    /// state asked of the provider.
    pub reconcile_after_secs: i64,
    /// A payout just submitted is first asked after this soon (or at
    /// `reconcile_after_secs`, if sooner), in case its webhook or callback
    /// came before kvitto had stored the submission and found nothing.
    pub first_status_check_secs: i64,
    /// First pause before a payout that failed transiently is tried again;
    /// it doubles up to `retry_max_pause_secs`. Transient failures are
    /// retried for as long as it takes: giving up could hide a payout the
    /// provider made but whose answer was lost.
    pub retry_min_pause_ms: u64,
    pub retry_max_pause_secs: u64,
    /// How long an instance holds a settlement it is paying out before
    /// another instance may take it over.
    pub lease_secs: i64,
    /// Timeout of one payout rail call.
    pub rail_timeout_ms: u64,
    pub defaults: RewardRules,
    pub businesses: Vec<BusinessRules>,
    pub stripe: Option<StripeRailConfig>,
    pub swish: Option<SwishRailConfig>,
    /// Keys of the feedback service, one per business.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Keys of review staff; `name` is recorded with every decision.
    pub staff_keys: Vec<StaffKeyConfig>,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            enabled: true,
            match_window_secs: 600,
            amount_tolerance_minor: 0,
            match_deadline_secs: 1_800,
            tick_ms: 500,
            reconcile_after_secs: 300,
            first_status_check_secs: 10,
            retry_min_pause_ms: 1_000,
            retry_max_pause_secs: 300,
            lease_secs: 60,
            rail_timeout_ms: 10_000,
            defaults: RewardRules::default(),
            businesses: Vec::new(),
            stripe: None,
            swish: None,
            api_keys: Vec::new(),
            staff_keys: Vec::new(),
        }
    }
}

impl SettlementConfig {
    /// The rules that apply to `business_id`.
    pub fn rules(&self, business_id: &str) -> &RewardRules {
        self.businesses
            .iter()
            .find(|b| b.business_id == business_id)
            .map(|b| &b.rules)
            .unwrap_or(&self.defaults)
    }
}

/// One step of the reward scale: feedback scoring at least `min_score`
/// earns `percent_bp` basis points (1/100 of a percent) of the purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub min_score: u8,
    pub percent_bp: u32,
}

/// How much a business pays for feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardRules {
    /// Rewards are paid in this currency only; purchases in another one
    /// earn none.
    pub currency: String,
    /// Ascending by `min_score`; a score below the first earns nothing.
    pub tiers: Vec<Tier>,
    /// Most one reward can be.
    pub max_reward_minor: i64,
    /// Most one customer can earn from this business in a Stockholm day,
    /// and in a calendar month.
    pub customer_daily_cap_minor: i64,
    pub customer_monthly_cap_minor: i64,
    /// What the business spends on rewards and fees in a calendar month.
    pub monthly_budget_minor: i64,
    /// The platform's fee on each reward, in basis points of the reward,
    /// charged to the business's budget beside it.
    pub platform_fee_bp: u32,
}

impl Default for RewardRules {
    fn default() -> Self {
        RewardRules {
            currency: "SEK".into(),
            tiers: vec![
                Tier {
                    min_score: 40,
                    percent_bp: 200,
                },
                Tier {
                    min_score: 70,
                    percent_bp: 500,
                },
                Tier {
                    min_score: 90,
                    percent_bp: 1_000,
                },
            ],
            max_reward_minor: 5_000,
            customer_daily_cap_minor: 10_000,
            customer_monthly_cap_minor: 50_000,
            monthly_budget_minor: 1_000_000,
            platform_fee_bp: 1_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessRules {
    pub business_id: String,
    #[serde(flatten)]
    pub rules: RewardRules,
}

/// The platform's Stripe account, which funds Connect transfers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeRailConfig {
    /// `https://api.stripe.com` in production.
    pub api_base_url: String,
    /// The platform's secret key (`sk_live_...`).
    pub secret_key: String,
    /// Where Stripe sends a merchant whose onboarding link expired, and
    /// where it returns them when they are done.
    pub onboarding_refresh_url: String,
    pub onboarding_return_url: String,
}

/// The merchant's Swish payout agreement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwishRailConfig {
    /// `https://cpc.getswish.net/swish-cpcapi` in production.
    pub api_base_url: String,
    /// The merchant's Swish number the payouts come from.
    pub payer_alias: String,
    /// The client certificate and key for mutual TLS (PEM). Unset only
    /// against the sandbox, which speaks plain HTTP.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// The payout signing certificate's RSA private key (PKCS#8 or PKCS#1
    /// PEM) and the certificate's serial number in hex.
    pub signing_key_file: PathBuf,
    pub signing_certificate_serial: String,
    /// kvitto's public URL for payout callbacks:
    /// `<base>/callbacks/swish/payouts/<token>`.
    pub callback_url: String,
    /// The unguessable path token of that URL (24+ characters): the
    /// callbacks are unsigned, and only a status lookup is trusted.
    pub callback_token: String,
}

/// The feedback service's key for one business.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub key: String,
    pub business_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffKeyConfig {
    pub key: String,
    pub name: String,
}

/// Shortest API or staff key accepted: a key is a password.
const MIN_KEY_CHARS: usize = 24;

impl SettlementConfig {
    /// Checks the section; the error names the key (`settlement.<...>`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((format!("settlement.{key}"), reason.to_string()));
        if self.tick_ms == 0 {
            return bad("tick_ms", "must be greater than 0");
        }
        for (key, value) in [
            ("match_window_secs", self.match_window_secs),
            ("amount_tolerance_minor", self.amount_tolerance_minor),
            ("match_deadline_secs", self.match_deadline_secs),
            ("reconcile_after_secs", self.reconcile_after_secs),
            ("first_status_check_secs", self.first_status_check_secs),
        ] {
            if value < 0 {
                return bad(key, "must not be negative");
            }
        }
        if self.lease_secs <= 0 {
            return bad("lease_secs", "must be greater than 0");
        }
        if self.retry_min_pause_ms == 0 {
            return bad("retry_min_pause_ms", "must be greater than 0");
        }
        self.defaults
            .validate()
            .map_err(|(key, reason)| (format!("settlement.defaults.{key}"), reason))?;
        let mut businesses = std::collections::HashSet::new();
        for (index, business) in self.businesses.iter().enumerate() {
            if !businesses.insert(business.business_id.as_str()) {
                return bad(&format!("businesses[{index}].business_id"), "listed twice");
            }
            business.rules.validate().map_err(|(key, reason)| {
                (format!("settlement.businesses[{index}].{key}"), reason)
            })?;
        }
        let mut keys = std::collections::HashSet::new();
        let all_keys = self
            .api_keys
            .iter()
            .map(|k| ("api_keys", k.key.as_str()))
            .chain(
                self.staff_keys
                    .iter()
                    .map(|k| ("staff_keys", k.key.as_str())),
            );
        for (index, (list, key)) in all_keys.enumerate() {
            if key.chars().count() < MIN_KEY_CHARS {
                return bad(list, "every key needs 24 or more characters");
            }
            if !keys.insert(key) {
                return bad(list, &format!("key number {index} is used twice"));
            }
        }
        if let Some(swish) = &self.swish
            && swish.callback_token.chars().count() < MIN_KEY_CHARS
        {
            return bad(
                "swish.callback_token",
                "must be an unguessable token of 24+ characters",
            );
        }
        Ok(())
    }
}

impl RewardRules {
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((key.to_string(), reason.to_string()));
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad("currency", "must be an upper-case ISO 4217 code");
        }
        if self.tiers.iter().any(|t| t.min_score > 100) {
            return bad("tiers", "min_score must be between 0 and 100");
        }
        if self.tiers.iter().any(|t| t.percent_bp > 10_000) {
            return bad("tiers", "percent_bp must be at most 10000 (100 %)");
        }
        if self.platform_fee_bp > 10_000 {
            return bad("platform_fee_bp", "must be at most 10000 (100 %)");
        }
        for (key, value) in [
            ("max_reward_minor", self.max_reward_minor),
            ("customer_daily_cap_minor", self.customer_daily_cap_minor),
            (
                "customer_monthly_cap_minor",
                self.customer_monthly_cap_minor,
            ),
            ("monthly_budget_minor", self.monthly_budget_minor),
        ] {
            if value < 0 {
                return bad(key, "must not be negative");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn negative_budget_names_the_key() {
        let error =
            Config::from_toml("[settlement.defaults]\nmonthly_budget_minor = -1\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "settlement.defaults.monthly_budget_minor: must not be negative"
        );
    }

    #[test]
    fn short_api_key_is_refused() {
        let text = "[[settlement.api_keys]]\nkey = \"short\"\nbusiness_id = \"b\"\n";
        let error = Config::from_toml(text).unwrap_err();
        assert!(
            error.to_string().starts_with("settlement.api_keys"),
            "{error}"
        );
    }

    #[test]
    fn tier_above_100_percent_names_the_business() {
        let text = "[[settlement.businesses]]\nbusiness_id = \"b\"\n\
                    tiers = [{ min_score = 10, percent_bp = 20000 }]\n";
        let error = Config::from_toml(text).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("settlement.businesses[0].tiers"),
            "{error}"
        );
    }
}
#[cfg(test)]
mod business_rules_tests {
    #[test]
    fn a_misspelt_business_rule_is_refused_by_name() {
        let text = "[[settlement.businesses]]\nbusiness_id = \"x\"\nmax_reward_minr = 5\n";
        let error = crate::config::Config::from_toml(text).unwrap_err();
        assert!(error.to_string().contains("max_reward_minr"), "{error}");
    }
}
