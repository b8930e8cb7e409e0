//! The generic adapter: a webhook format kvitto defines for any point-of-sale
//! system without a dedicated module.
//!
//! The POS sends `transaction.created` / `transaction.updated` events as
//! JSON signed with HMAC-SHA256 (header, encoding and signed content set per
//! integration) and answers `GET {api_base}/transactions/{id}` with the same
//! transaction shape, which kvitto treats as the truth.

pub mod api;
pub mod decode;
pub mod sandbox;
pub mod signature;

#[cfg(test)]
pub(crate) mod fixtures {
    //! Configurations shared by the generic adapter's and the sandbox's tests.

    use crate::config::{Config, IntegrationConfig};

    /// One generic integration signing `timestamp-dot-body` in hex (as the
    /// demo config does) and one signing the bare body in base64, with a
    /// second, rotated-in secret.
    pub fn config(api_base: &str) -> Config {
        let text = format!(
            r#"
            [[integrations]]
            id = "pos-uppsala"
            provider = "generic"
            business_id = "gardsbutiken"
            location_id = "uppsala"
            signing_secrets = ["demo-generic-secret"]
            signature_header = "x-pos-signature"
            signature_encoding = "hex"
            signed_payload = "timestamp-dot-body"
            timestamp_header = "x-pos-timestamp"
            api_base_url = "{api_base}"
            api_token = "demo-generic-token"

            [[integrations]]
            id = "pos-lund"
            provider = "generic"
            business_id = "kafe-lund"
            location_id = "lund"
            signing_secrets = ["new-secret", "demo-generic-secret"]
            signature_header = "x-pos-signature"
            signature_encoding = "base64"
            api_base_url = "{api_base}"
            api_token = "lund-token"
            "#
        );
        Config::from_toml(&text).expect("fixture config is valid")
    }

    pub fn timestamped(api_base: &str) -> IntegrationConfig {
        config(api_base).integrations[0].clone()
    }

    pub fn body_signed(api_base: &str) -> IntegrationConfig {
        config(api_base).integrations[1].clone()
    }
}
