//! HMAC-SHA256 signatures as the providers use them: the decoding of a
//! claimed signature, the check against every configured secret and the
//! signing that the sandbox and `kvitto sign` need.
//!
//! Each provider's `signature.rs` still says what its scheme signs and where
//! the signature travels; this module only keeps the parts they share, so
//! the guarantee is kept in one place: a signature counts only when one
//! non-empty secret produces its exact 32 bytes, compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::providers::SignatureError;

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag; a claimed signature of any other length is
/// malformed.
pub(crate) const SIGNATURE_LEN_BYTES: usize = 32;

/// Decodes a standard-base64 signature into its 32 claimed bytes. A hex
/// digest (64 characters, all valid base64) decodes to 48 bytes and is
/// refused here.
pub(crate) fn decode_base64_signature(value: &str) -> Result<Vec<u8>, SignatureError> {
    reject_empty(value)?;
    let bytes = BASE64
        .decode(value)
        .map_err(|_| SignatureError::MalformedHeader("signature is not base64"))?;
    check_length(bytes)
}

/// Decodes a hex signature (either case) into its 32 claimed bytes.
pub(crate) fn decode_hex_signature(value: &str) -> Result<Vec<u8>, SignatureError> {
    reject_empty(value)?;
    let bytes =
        hex::decode(value).map_err(|_| SignatureError::MalformedHeader("signature is not hex"))?;
    check_length(bytes)
}

/// Whether one of `secrets` signs `parts`, taken in order as one message,
/// as `claimed`. Empty secrets are skipped: an unset secret must never
/// verify anything.
pub(crate) fn matches_any_secret(secrets: &[String], parts: &[&[u8]], claimed: &[u8]) -> bool {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .any(|secret| mac(secret, parts).verify_slice(claimed).is_ok())
}

/// [`matches_any_secret`] as a verdict: `Mismatch` when no secret matches.
pub(crate) fn verify_any_secret(
    secrets: &[String],
    parts: &[&[u8]],
    claimed: &[u8],
) -> Result<(), SignatureError> {
    if matches_any_secret(secrets, parts, claimed) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The lowercase hex HMAC-SHA256 of `parts` under `secret`.
pub(crate) fn sign_hex(secret: &str, parts: &[&[u8]]) -> String {
    hex::encode(mac(secret, parts).finalize().into_bytes())
}

/// The standard-base64 HMAC-SHA256 of `parts` under `secret`.
pub(crate) fn sign_base64(secret: &str, parts: &[&[u8]]) -> String {
    BASE64.encode(mac(secret, parts).finalize().into_bytes())
}

fn mac(secret: &str, parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("hmac accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

fn reject_empty(value: &str) -> Result<(), SignatureError> {
    if value.is_empty() {
        return Err(SignatureError::MalformedHeader("signature is empty"));
    }
    Ok(())
}

fn check_length(bytes: Vec<u8>) -> Result<Vec<u8>, SignatureError> {
    if bytes.len() != SIGNATURE_LEN_BYTES {
        return Err(SignatureError::MalformedHeader(
            "signature has the wrong length",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "key";
    const MESSAGE: &[u8] = b"The quick brown fox jumps over the lazy dog";
    // The HMAC-SHA256 example vector from Wikipedia's HMAC article.
    const MESSAGE_HEX: &str = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";

    #[test]
    fn signing_parts_equals_signing_their_concatenation() {
        assert_eq!(sign_hex(SECRET, &[MESSAGE]), MESSAGE_HEX);
        assert_eq!(
            sign_hex(SECRET, &[&MESSAGE[..9], &MESSAGE[9..]]),
            MESSAGE_HEX
        );
        let base64 = sign_base64(SECRET, &[MESSAGE]);
        assert_eq!(
            decode_base64_signature(&base64).unwrap(),
            hex::decode(MESSAGE_HEX).unwrap()
        );
    }

    #[test]
    fn any_non_empty_secret_may_match() {
        let claimed = decode_hex_signature(MESSAGE_HEX).unwrap();
        let secrets = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches_any_secret(
            &secrets(&["old", SECRET]),
            &[MESSAGE],
            &claimed
        ));
        assert!(!matches_any_secret(
            &secrets(&["old", ""]),
            &[MESSAGE],
            &claimed
        ));
        assert!(!matches_any_secret(&secrets(&[]), &[MESSAGE], &claimed));
    }

    #[test]
    fn decoders_refuse_empty_foreign_and_wrongly_sized_values() {
        let short_hex = &MESSAGE_HEX[..62];
        for value in ["", "zz", short_hex, "åäö"] {
            assert!(decode_hex_signature(value).is_err(), "{value:?}");
        }
        let short_base64 = BASE64.encode([0_u8; 31]);
        for value in ["", "not base64!", short_base64.as_str(), MESSAGE_HEX] {
            assert!(decode_base64_signature(value).is_err(), "{value:?}");
        }
    }
}
