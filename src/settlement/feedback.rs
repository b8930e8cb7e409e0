//! The feedback service's message: one scored piece of feedback about one
//! purchase, and where its reward goes.
//!
//! The same JSON arrives on `kvitto.feedback` and at `POST /v1/feedback`;
//! [`Feedback::parse`] is the one place that decides whether it is well
//! formed, and its error names the offending field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Destination;

/// Longest id kvitto accepts for feedback, businesses and locations.
const MAX_ID_CHARS: usize = 128;
/// Longest customer reference (an opaque hash of the customer).
const MAX_CUSTOMER_REF_CHARS: usize = 128;
const MAX_SCORE: u8 = 100;
/// The largest feedback message kvitto reads (one is a few hundred bytes).
pub const MAX_FEEDBACK_BYTES: usize = 16 * 1024;
/// The largest purchase amount a feedback may name: 10 million kronor.
const MAX_AMOUNT_MINOR: i64 = 1_000_000_000;

/// One scored feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub feedback_id: String,
    pub business_id: String,
    pub location_id: String,
    /// Opaque and stable per customer; kvitto never needs a name or a phone
    /// number to match, only to pay.
    pub customer_ref: String,
    pub purchase: PurchaseHint,
    /// 0-100, from the scoring service.
    pub quality_score: u8,
    pub payout: Destination,
}

/// The purchase as the receipt or the customer knew it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseHint {
    /// The provider's transaction id, when the receipt carried one.
    #[serde(default)]
    pub provider_transaction_id: Option<String>,
    #[serde(default)]
    pub amount_minor: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Why a message is not well-formed feedback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidFeedback {
    /// The JSON path of the offending field (`payout.number`), or `body`.
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidFeedback {
    InvalidFeedback {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Feedback {
    /// Parses and validates one message.
    ///
    /// The reasons name fields and what they must be, never the values
    /// given: a refused message may hold a personal identity number, and
    /// the reason is logged and dead-lettered.
    pub fn parse(bytes: &[u8]) -> Result<Feedback, InvalidFeedback> {
        if bytes.len() > MAX_FEEDBACK_BYTES {
            return Err(invalid(
                "body",
                format!("must be at most {MAX_FEEDBACK_BYTES} bytes"),
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let feedback: Feedback =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
                let path = error.path().to_string();
                // A key that is the empty string gives an empty path.
                let field = if path == "." || path.is_empty() {
                    "body".into()
                } else {
                    path
                };
                InvalidFeedback {
                    field,
                    reason: without_values(&error.into_inner().to_string()),
                }
            })?;
        deserializer
            .end()
            .map_err(|_| invalid("body", "trailing characters after the JSON object"))?;
        feedback.validate()?;
        Ok(feedback)
    }

    fn validate(&self) -> Result<(), InvalidFeedback> {
        check_id("feedback_id", &self.feedback_id, MAX_ID_CHARS)?;
        check_id("business_id", &self.business_id, MAX_ID_CHARS)?;
        check_id("location_id", &self.location_id, MAX_ID_CHARS)?;
        check_id("customer_ref", &self.customer_ref, MAX_CUSTOMER_REF_CHARS)?;
        if self.quality_score > MAX_SCORE {
            return Err(invalid("quality_score", "must be between 0 and 100"));
        }
        self.purchase.validate()?;
        validate_destination(&self.payout)
    }
}

/// serde's messages about a wrong value quote it (``invalid type: integer
/// `199001011234`, expected a string``, `invalid value: string "…"`); the
/// value is cut out, its kind and what was expected kept. An unknown
/// variant (``unknown variant `…`, expected `stripe` or `swish` ``) quotes
/// the tag as given, so it loses the quote too. Messages that quote field
/// names are left as they are.
fn without_values(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unknown variant{}", expected_part(rest));
    }
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let kind = rest.split([' ', '`', '"', ',']).next().unwrap_or_default();
        return format!("{prefix}{kind}{}", expected_part(rest));
    }
    message.to_string()
}

/// The `, expected …` tail of a serde message, or nothing.
fn expected_part(rest: &str) -> &str {
    rest.find(", expected")
        .map(|at| &rest[at..])
        .unwrap_or_default()
}

impl PurchaseHint {
    fn validate(&self) -> Result<(), InvalidFeedback> {
        // Whatever is given is checked, even beside a transaction id that
        // makes it unused: all of it is stored.
        if let Some(amount) = self.amount_minor
            && !(1..=MAX_AMOUNT_MINOR).contains(&amount)
        {
            return Err(invalid(
                "purchase.amount_minor",
                format!("must be 1 to {MAX_AMOUNT_MINOR}"),
            ));
        }
        if let Some(currency) = &self.currency
            && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(invalid(
                "purchase.currency",
                "must be an upper-case ISO 4217 code",
            ));
        }
        if let Some(at) = self.occurred_at
            && !plausible_purchase_time(at)
        {
            return Err(invalid(
                "purchase.occurred_at",
                "must be a time between the year 2000 and now",
            ));
        }
        if let Some(id) = &self.provider_transaction_id {
            return check_id("purchase.provider_transaction_id", id, MAX_ID_CHARS);
        }
        let Some(amount) = self.amount_minor else {
            return Err(invalid(
                "purchase.amount_minor",
                "required when purchase.provider_transaction_id is absent",
            ));
        };
        if amount <= 0 {
            return Err(invalid("purchase.amount_minor", "must be positive"));
        }
        if self.occurred_at.is_none() {
            return Err(invalid(
                "purchase.occurred_at",
                "required when purchase.provider_transaction_id is absent",
            ));
        }
        match &self.currency {
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => Ok(()),
            Some(_) => Err(invalid(
                "purchase.currency",
                "must be an upper-case ISO 4217 code",
            )),
            None => Err(invalid(
                "purchase.currency",
                "required when purchase.provider_transaction_id is absent",
            )),
        }
    }
}

/// A purchase happened after 2000 and before now (with a day's slack for
/// clocks): anything else is a typing error, or a time kvitto could not
/// store and read back.
pub fn plausible_purchase_time(at: DateTime<Utc>) -> bool {
    let earliest = DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    at >= earliest && at <= Utc::now() + chrono::Duration::days(1)
}

fn check_id(field: &str, value: &str, max_chars: usize) -> Result<(), InvalidFeedback> {
    if value.is_empty() || value.chars().count() > max_chars {
        return Err(invalid(
            field,
            format!("must be 1 to {max_chars} characters"),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if !value.chars().all(allowed) {
        return Err(invalid(field, "may hold only A-Z, a-z, 0-9 and - _ . :"));
    }
    // `.` and `..` would be path segments in the URLs that name it.
    if value.chars().all(|c| c == '.') {
        return Err(invalid(field, "must hold more than dots"));
    }
    Ok(())
}

fn validate_destination(destination: &Destination) -> Result<(), InvalidFeedback> {
    match destination {
        Destination::Stripe { account } => {
            let rest = account.strip_prefix("acct_").unwrap_or("");
            if rest.is_empty()
                || rest.len() > 64
                || !rest.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(invalid(
                    "payout.account",
                    "must be a Stripe connected account id (acct_...)",
                ));
            }
            Ok(())
        }
        Destination::Swish { number, ssn } => {
            let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if !(number.starts_with("46") && (10..=15).contains(&number.len()) && digits(number)) {
                return Err(invalid(
                    "payout.number",
                    "must be a Swish number: 10 to 15 digits, starting with 46",
                ));
            }
            if ssn.len() != 12 || !digits(ssn) {
                return Err(invalid(
                    "payout.ssn",
                    "must be a personal identity number of 12 digits (YYYYMMDDNNNN)",
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(purchase: &str, payout: &str) -> String {
        format!(
            r#"{{"feedback_id":"fb-1","business_id":"b","location_id":"l",
                "customer_ref":"c1","purchase":{purchase},"quality_score":80,
                "payout":{payout}}}"#
        )
    }

    const SWISH: &str = r#"{"rail":"swish","number":"46701234567","ssn":"199001011234"}"#;

    #[test]
    fn feedback_with_transaction_id_and_swish_payout_parses() {
        let text = body(r#"{"provider_transaction_id":"pay_1"}"#, SWISH);
        let feedback = Feedback::parse(text.as_bytes()).unwrap();
        assert_eq!(
            feedback.purchase.provider_transaction_id.as_deref(),
            Some("pay_1")
        );
        assert_eq!(feedback.payout.rail(), super::super::Rail::Swish);
    }

    #[test]
    fn feedback_without_transaction_id_needs_amount_time_and_currency() {
        let text = body(r#"{"amount_minor":100,"currency":"SEK"}"#, SWISH);
        let error = Feedback::parse(text.as_bytes()).unwrap_err();
        assert_eq!(error.field, "purchase.occurred_at");
        let text = body(
            r#"{"amount_minor":100,"currency":"SEK","occurred_at":"2026-12-04T10:00:00Z"}"#,
            SWISH,
        );
        Feedback::parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn score_over_100_names_the_field() {
        let text = body(r#"{"provider_transaction_id":"p"}"#, SWISH).replace("80", "101");
        assert_eq!(
            Feedback::parse(text.as_bytes()).unwrap_err().field,
            "quality_score"
        );
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let text = body(r#"{"amount_minor":"12.50"}"#, SWISH);
        let error = Feedback::parse(text.as_bytes()).unwrap_err();
        assert_eq!(error.field, "purchase.amount_minor");
    }

    #[test]
    fn missing_field_and_unknown_rail_are_named() {
        let error = Feedback::parse(br#"{"feedback_id":"x"}"#).unwrap_err();
        assert_eq!(error.field, "body");
        assert!(error.reason.contains("business_id"), "{error}");
        let text = body(r#"{"provider_transaction_id":"p"}"#, r#"{"rail":"paypal"}"#);
        assert_eq!(
            Feedback::parse(text.as_bytes()).unwrap_err().field,
            "payout.rail"
        );
    }

    #[test]
    fn swish_number_and_ssn_are_checked() {
        let bad = r#"{"rail":"swish","number":"0701234567","ssn":"199001011234"}"#;
        let text = body(r#"{"provider_transaction_id":"p"}"#, bad);
        assert_eq!(
            Feedback::parse(text.as_bytes()).unwrap_err().field,
            "payout.number"
        );
        let bad = r#"{"rail":"swish","number":"46701234567","ssn":"9001011234"}"#;
        let text = body(r#"{"provider_transaction_id":"p"}"#, bad);
        assert_eq!(
            Feedback::parse(text.as_bytes()).unwrap_err().field,
            "payout.ssn"
        );
    }

    #[test]
    fn stripe_account_must_look_like_one() {
        let text = body(
            r#"{"provider_transaction_id":"p"}"#,
            r#"{"rail":"stripe","account":"pm_123"}"#,
        );
        assert_eq!(
            Feedback::parse(text.as_bytes()).unwrap_err().field,
            "payout.account"
        );
    }

    #[test]
    fn ids_with_odd_characters_are_refused() {
        let text = body(r#"{"provider_transaction_id":"p"}"#, SWISH).replace("fb-1", "fb 1;");
        assert_eq!(
            Feedback::parse(text.as_bytes()).unwrap_err().field,
            "feedback_id"
        );
    }

    #[test]
    fn a_refused_value_is_never_repeated_in_the_reason() {
        let number_ssn = r#"{"rail":"swish","number":"46701234567","ssn":199001011234}"#;
        let text = body(r#"{"provider_transaction_id":"p"}"#, number_ssn);
        let error = Feedback::parse(text.as_bytes()).unwrap_err();
        assert!(error.field.starts_with("payout"), "{error}");
        assert!(!error.to_string().contains("199001011234"), "{error}");
        assert!(error.reason.contains("expected a string"), "{error}");
    }

    #[test]
    fn an_unknown_rail_is_not_repeated_in_the_reason() {
        let text = body(
            r#"{"provider_transaction_id":"p"}"#,
            r#"{"rail":"199001011234"}"#,
        );
        let error = Feedback::parse(text.as_bytes()).unwrap_err();
        assert_eq!(error.field, "payout.rail");
        assert!(!error.to_string().contains("199001011234"), "{error}");
        assert!(
            error.reason.starts_with("unknown variant, expected"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_key_is_reported_against_the_body() {
        let error = Feedback::parse(br#"{"feedback_id":"x","":1}"#).unwrap_err();
        assert_eq!(error.field, "body");
    }

    #[test]
    fn purchase_fields_beside_a_transaction_id_are_checked_too() {
        let nul = body(
            r#"{"provider_transaction_id":"p","currency":"S\u0000K"}"#,
            SWISH,
        );
        let error = Feedback::parse(nul.as_bytes()).unwrap_err();
        assert_eq!(error.field, "purchase.currency");
        let huge = body(
            r#"{"provider_transaction_id":"p","amount_minor":9223372036854775807}"#,
            SWISH,
        );
        let error = Feedback::parse(huge.as_bytes()).unwrap_err();
        assert_eq!(error.field, "purchase.amount_minor");
    }

    #[test]
    fn dots_alone_and_oversized_bodies_are_refused() {
        let dots = body(r#"{"provider_transaction_id":"p"}"#, SWISH).replace("fb-1", "..");
        assert_eq!(
            Feedback::parse(dots.as_bytes()).unwrap_err().field,
            "feedback_id"
        );
        let padded = format!(
            "{}{}",
            body(r#"{"provider_transaction_id":"p"}"#, SWISH),
            " ".repeat(MAX_FEEDBACK_BYTES)
        );
        assert_eq!(
            Feedback::parse(padded.as_bytes()).unwrap_err().field,
            "body"
        );
    }

    #[test]
    fn purchase_times_kvitto_could_not_keep_are_refused() {
        for at in [
            "+262142-12-31T23:59:59Z",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+23:59",
            "1999-12-31T23:59:59Z",
        ] {
            let purchase =
                format!(r#"{{"amount_minor":100,"currency":"SEK","occurred_at":"{at}"}}"#);
            let text = body(&purchase, SWISH);
            match Feedback::parse(text.as_bytes()) {
                Err(error) => assert_eq!(error.field, "purchase.occurred_at", "{at}: {error}"),
                Ok(_) => panic!("{at} accepted"),
            }
        }
    }
}
