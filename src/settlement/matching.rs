//! Matching: which verified purchase a feedback is about.
//!
//! By the provider's transaction id when the feedback has one (the same
//! business, any of its locations); otherwise the same business and
//! location, the same currency, an amount within the tolerance and a time
//! within the window. Only verified, completed transactions that back no
//! reward yet are candidates. One candidate is a match, none means wait
//! (the webhook may come after the feedback) until the deadline, several
//! are held for review: kvitto never guesses between two purchases.

use chrono::{DateTime, Duration, Utc};
use sqlx::{AnyPool, Row};

use super::store::{FeedbackRecord, MatchedPurchase};
use crate::store::{StoreError, format_time, parse_time};

/// More candidates than this are not read: two already make it ambiguous.
const MAX_CANDIDATES: i64 = 5;

/// What the transactions say about a feedback now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    One(MatchedPurchase),
    None,
    /// The candidates' transaction ids.
    Several(Vec<String>),
}

/// How close a purchase must be to the feedback's description.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub window: Duration,
    pub amount_minor: i64,
}

/// Looks for the feedback's purchase among the stored transactions.
pub async fn find(
    pool: &AnyPool,
    record: &FeedbackRecord,
    tolerance: Tolerance,
) -> Result<Match, StoreError> {
    let feedback = &record.feedback;
    let hint = &feedback.purchase;
    let base = "SELECT t.id, t.amount_minor, t.currency, t.occurred_at FROM transactions t \
                WHERE t.business_id = $1 AND t.verdict = 'verified' AND t.state = 'completed' \
                AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.purchase_ref = t.id)";
    let rows = if let Some(reference) = &hint.provider_transaction_id {
        sqlx::query(&format!(
            "{base} AND t.provider_transaction_id = $2 ORDER BY t.id LIMIT $3"
        ))
        .bind(&feedback.business_id)
        .bind(reference)
        .bind(MAX_CANDIDATES)
        .fetch_all(pool)
        .await?
    } else {
        let (Some(amount), Some(currency), Some(at)) = (
            hint.amount_minor,
            hint.currency.as_deref(),
            hint.occurred_at,
        ) else {
            return Ok(Match::None);
        };
        let (earliest, latest) = window(at, tolerance.window);
        sqlx::query(&format!(
            "{base} AND t.location_id = $2 AND t.currency = $3 \
             AND t.amount_minor >= $4 AND t.amount_minor <= $5 \
             AND t.occurred_at >= $6 AND t.occurred_at <= $7 ORDER BY t.id LIMIT $8"
        ))
        .bind(&feedback.business_id)
        .bind(&feedback.location_id)
        .bind(currency)
        .bind(amount.saturating_sub(tolerance.amount_minor))
        .bind(amount.saturating_add(tolerance.amount_minor))
        .bind(earliest)
        .bind(latest)
        .bind(MAX_CANDIDATES)
        .fetch_all(pool)
        .await?
    };
    let mut candidates = rows
        .iter()
        .map(|row| -> Result<MatchedPurchase, StoreError> {
            Ok(MatchedPurchase {
                purchase_ref: row.try_get("id")?,
                amount_minor: row.try_get("amount_minor")?,
                currency: row.try_get("currency")?,
                occurred_at: parse_time(&row.try_get::<String, _>("occurred_at")?)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match candidates.len() {
        0 => Match::None,
        1 => Match::One(candidates.remove(0)),
        _ => Match::Several(candidates.into_iter().map(|c| c.purchase_ref).collect()),
    })
}

/// The stored-text bounds of `at ± window`; stored times are fixed-width
/// RFC 3339 UTC text, so they compare as text.
fn window(at: DateTime<Utc>, window: Duration) -> (String, String) {
    (format_time(at - window), format_time(at + window))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn window_bounds_sort_like_stored_times() {
        let at = Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap();
        let (earliest, latest) = window(at, Duration::minutes(10));
        assert_eq!(earliest, "2026-12-04T09:50:00.000Z");
        assert_eq!(latest, "2026-12-04T10:10:00.000Z");
        let inside = format_time(at + Duration::minutes(9));
        let outside = format_time(at + Duration::minutes(11));
        assert!(earliest.as_str() <= inside.as_str() && inside.as_str() <= latest.as_str());
        assert!(outside.as_str() > latest.as_str());
    }
}
