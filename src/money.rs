//! Money: amounts in integer minor units of each currency's real exponent.
//!
//! Providers that send decimal strings (Shopify, Swish) are converted here,
//! exactly and never through a float. Anything that is not a plain decimal
//! (`1e3`, `10,00`, `+5`, `1_000`, more decimals than the currency has) is
//! rejected rather than guessed at.

use iso_currency::Currency;
use rust_decimal::Decimal;
use serde_json::value::RawValue;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("amount {0:?} is not a plain decimal")]
    NotDecimal(String),
    #[error("amount {amount:?} has more decimals than {currency} allows")]
    TooPrecise { amount: String, currency: String },
    #[error("amount {0:?} is out of range")]
    OutOfRange(String),
}

/// The ISO 4217 code in upper case, checked against the standard.
pub fn normalize_currency(code: &str) -> Result<String, MoneyError> {
    let upper = code.trim().to_ascii_uppercase();
    Currency::from_code(&upper)
        .map(|_| upper)
        .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
}

/// Longer amount texts are refused before parsing: i64 minor units never
/// need more (19 digits, a sign, a point and trailing zeros to spare).
const MAX_AMOUNT_CHARS: usize = 40;

/// Digits after the decimal point in `code` (2 for SEK, 0 for JPY, 3 for KWD).
pub fn exponent(code: &str) -> Result<u32, MoneyError> {
    let currency = Currency::from_code(&code.trim().to_ascii_uppercase())
        .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))?;
    // Funds and metals have no minor unit; treat them as whole units.
    Ok(currency.exponent().map(u32::from).unwrap_or(0))
}

/// Converts a decimal string such as `"149.50"` into minor units.
pub fn decimal_to_minor(amount: &str, currency: &str) -> Result<i64, MoneyError> {
    let exponent = exponent(currency)?;
    if !is_plain_decimal(amount) {
        return Err(MoneyError::NotDecimal(amount.to_string()));
    }
    // Counted on the text, before parsing: the decimal type rounds past its
    // 28 digits of precision, which would turn "0.0…01" into 0 unnoticed.
    let fraction = amount
        .split_once('.')
        .map(|(_, f)| f.trim_end_matches('0'))
        .unwrap_or("");
    if fraction.len() > exponent as usize {
        return Err(MoneyError::TooPrecise {
            amount: amount.to_string(),
            currency: currency.to_string(),
        });
    }
    if amount.len() > MAX_AMOUNT_CHARS {
        return Err(MoneyError::OutOfRange(amount.to_string()));
    }
    let value: Decimal = amount
        .parse()
        .map_err(|_| MoneyError::NotDecimal(amount.to_string()))?;
    let value = value.normalize();
    if value.scale() > exponent {
        return Err(MoneyError::TooPrecise {
            amount: amount.to_string(),
            currency: currency.to_string(),
        });
    }
    let scaled = value
        .checked_mul(Decimal::from(10_i64.pow(exponent)))
        .ok_or_else(|| MoneyError::OutOfRange(amount.to_string()))?;
    i64::try_from(scaled).map_err(|_| MoneyError::OutOfRange(amount.to_string()))
}

/// Converts a JSON number or string amount (Swish answers with either) into
/// minor units. It takes the raw JSON text of the value, so a number is read
/// from its own digits and never passes through a float.
pub fn json_amount_to_minor(raw: &RawValue, currency: &str) -> Result<i64, MoneyError> {
    let text = raw.get().trim();
    if text.starts_with('"') {
        let unquoted: String =
            serde_json::from_str(text).map_err(|_| MoneyError::NotDecimal(text.to_string()))?;
        decimal_to_minor(&unquoted, currency)
    } else {
        decimal_to_minor(text, currency)
    }
}

/// Formats minor units as a decimal in the currency's exponent
/// (`14950, "SEK"` → `149.50`); unknown currencies print as whole units.
pub fn format_minor(amount_minor: i64, currency: &str) -> String {
    let exponent = exponent(currency).unwrap_or(0);
    Decimal::new(amount_minor, exponent).to_string()
}

/// `-?digits(.digits)?` and nothing else.
fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sek_decimal_strings_become_ore() {
        assert_eq!(decimal_to_minor("149.50", "SEK"), Ok(14950));
        assert_eq!(decimal_to_minor("149.5", "SEK"), Ok(14950));
        assert_eq!(decimal_to_minor("149", "SEK"), Ok(14900));
        assert_eq!(decimal_to_minor("0.01", "sek"), Ok(1));
        assert_eq!(decimal_to_minor("-12.30", "SEK"), Ok(-1230));
    }

    #[test]
    fn currency_exponents_are_real() {
        assert_eq!(decimal_to_minor("1500", "JPY"), Ok(1500));
        assert_eq!(decimal_to_minor("1.234", "KWD"), Ok(1234));
        assert!(matches!(
            decimal_to_minor("1.5", "JPY"),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn ambiguous_amounts_are_rejected() {
        for bad in [
            "1e3", "10,00", "+5", "1_000", "", ".5", "5.", "1.2.3", " 5", "NaN", "١٢",
        ] {
            assert!(
                decimal_to_minor(bad, "SEK").is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(matches!(
            decimal_to_minor("1.001", "SEK"),
            Err(MoneyError::TooPrecise { .. })
        ));
    }

    #[test]
    fn precision_past_the_decimal_types_digits_is_refused_not_rounded() {
        for amount in [
            "149.4999999999999999999999999999999",
            "0.00000000000000000000000000000001",
        ] {
            assert!(
                matches!(
                    decimal_to_minor(amount, "SEK"),
                    Err(MoneyError::TooPrecise { .. })
                ),
                "{amount} was accepted"
            );
        }
    }

    #[test]
    fn trailing_zeros_beyond_exponent_are_fine() {
        assert_eq!(decimal_to_minor("10.000", "SEK"), Ok(1000));
    }

    #[test]
    fn minor_units_format_in_the_currency_exponent() {
        assert_eq!(format_minor(14950, "SEK"), "149.50");
        assert_eq!(format_minor(1500, "JPY"), "1500");
        assert_eq!(format_minor(-5, "SEK"), "-0.05");
    }

    #[test]
    fn unknown_currency_is_rejected() {
        assert!(matches!(
            decimal_to_minor("1", "XYZ"),
            Err(MoneyError::UnknownCurrency(_))
        ));
    }

    #[test]
    fn json_numbers_never_pass_through_a_float() {
        let number: Box<RawValue> = serde_json::from_str("100.10").unwrap();
        assert_eq!(json_amount_to_minor(&number, "SEK"), Ok(10010));
        let huge: Box<RawValue> = serde_json::from_str("92233720368547758.07").unwrap();
        assert_eq!(
            json_amount_to_minor(&huge, "SEK"),
            Ok(9_223_372_036_854_775_807)
        );
        let text: Box<RawValue> = serde_json::from_str("\"0.10\"").unwrap();
        assert_eq!(json_amount_to_minor(&text, "SEK"), Ok(10));
        let exponent: Box<RawValue> = serde_json::from_str("1e3").unwrap();
        assert!(json_amount_to_minor(&exponent, "SEK").is_err());
    }

    #[test]
    fn overflow_is_out_of_range() {
        assert!(matches!(
            decimal_to_minor("92233720368547758.08", "SEK"),
            Err(MoneyError::OutOfRange(_))
        ));
    }
}
