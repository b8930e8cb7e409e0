//! The settlement rows: feedback, settlements, spend counters, the outbox.
//!
//! Guarantee: every step is one database transaction guarded by a
//! constraint or a compare-and-set, so running it twice, or on two
//! instances at once, has the effect of running it once:
//!
//! - `feedback.id` is the primary key: the same feedback twice is one;
//! - a feedback leaves `waiting` by a compare-and-set on its state, and a
//!   settlement's id is derived from the feedback id and its purchase is
//!   unique, so one feedback gets one settlement and one purchase backs one;
//! - spend is reserved by conditional increments that cannot pass a limit;
//! - a settlement changes state by compare-and-set on its `version`, and
//!   each change writes its ledger journal and its outbox event in the same
//!   transaction.

use chrono::{DateTime, Duration, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use uuid::Uuid;

use super::config::RewardRules;
use super::feedback::{Feedback, PurchaseHint};
use super::ledger::{self, JournalKind, Posting};
use super::reward::{self, NoReward, Spent};
use super::{Destination, Rail, SettlementState, settlement_id};
use crate::store::{StoreError, format_time, parse_time};

/// How many times a step is retried when a concurrent writer won.
const MAX_CONFLICT_RETRIES: usize = 8;

/// Where a feedback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackState {
    /// No purchase matched yet; matching is tried until the deadline.
    Waiting,
    /// Matched to a purchase: see its settlement.
    Matched,
    /// No purchase matched by the deadline. Held for review.
    NoMatchingPurchase,
    /// Several purchases matched. Held for review.
    Ambiguous,
    /// Matched, but earns nothing (`reason` says why).
    NotRewarded,
    /// Rejected by review staff.
    Rejected,
}

impl FeedbackState {
    pub const ALL: [FeedbackState; 6] = [
        FeedbackState::Waiting,
        FeedbackState::Matched,
        FeedbackState::NoMatchingPurchase,
        FeedbackState::Ambiguous,
        FeedbackState::NotRewarded,
        FeedbackState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackState::Waiting => "waiting",
            FeedbackState::Matched => "matched",
            FeedbackState::NoMatchingPurchase => "no_matching_purchase",
            FeedbackState::Ambiguous => "ambiguous",
            FeedbackState::NotRewarded => "not_rewarded",
            FeedbackState::Rejected => "rejected",
        }
    }

    pub fn parse(value: &str) -> Option<FeedbackState> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Held for a person to decide.
    pub fn is_held(self) -> bool {
        matches!(
            self,
            FeedbackState::NoMatchingPurchase | FeedbackState::Ambiguous
        )
    }
}

/// A stored feedback.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRecord {
    pub feedback: Feedback,
    pub state: FeedbackState,
    pub reason: Option<String>,
    pub purchase_ref: Option<String>,
    pub received_at: DateTime<Utc>,
    pub match_deadline: DateTime<Utc>,
    pub reviewed_by: Option<String>,
    pub review_note: Option<String>,
}

/// The purchase a feedback was matched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedPurchase {
    /// kvitto's transaction id, or `receipt:<business>:<number>`.
    pub purchase_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub occurred_at: DateTime<Utc>,
}

/// Who decided a held feedback, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub reviewer: String,
    pub note: String,
}

/// One reward and where its payout stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub id: Uuid,
    pub feedback_id: String,
    pub purchase_ref: String,
    pub business_id: String,
    pub customer_ref: String,
    pub destination: Destination,
    pub purchase_amount_minor: i64,
    pub amount_minor: i64,
    pub fee_minor: i64,
    pub currency: String,
    pub quality_score: i64,
    pub state: SettlementState,
    pub provider_ref: Option<String>,
    pub failure_reason: Option<String>,
    pub clawed_back: bool,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub version: i64,
    pub budget_period: String,
    pub customer_day: String,
    pub customer_month: String,
    pub purchased_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Settlement {
    pub fn rail(&self) -> Rail {
        self.destination.rail()
    }

    fn posting(&self) -> Posting<'_> {
        Posting {
            settlement_id: self.id,
            business_id: &self.business_id,
            rail: self.rail(),
            amount_minor: self.amount_minor,
            fee_minor: self.fee_minor,
            currency: &self.currency,
        }
    }
}

/// What [`settle`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SettleOutcome {
    /// A settlement was written; its payout is next.
    Settled(Box<Settlement>),
    /// Matched, but the rules give no reward.
    NotRewarded(NoReward),
    /// The purchase already backs another feedback's reward.
    PurchaseTaken,
    /// The feedback was no longer in the state the caller saw (another
    /// instance, a retry or a reviewer decided it first).
    AlreadyDecided,
}

/// A change of a settlement.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The provider accepted the payout; ask again at `check_at`.
    Submitted {
        provider_ref: String,
        check_at: DateTime<Utc>,
    },
    Paid {
        provider_ref: Option<String>,
    },
    Failed {
        provider_ref: Option<String>,
        reason: String,
    },
    /// The purchase was refunded before any payout.
    Canceled {
        reason: String,
    },
    /// Try again at `next_attempt_at` (a transient failure); no event.
    Retry {
        next_attempt_at: DateTime<Utc>,
    },
    /// Still in flight at the provider; ask again at `check_at`; no event.
    Recheck {
        check_at: DateTime<Utc>,
    },
    /// The purchase was refunded after the payout.
    ClawBack,
}

const SETTLEMENT_COLUMNS: &str = "id, feedback_id, purchase_ref, business_id, customer_ref, \
    rail, destination, purchase_amount_minor, amount_minor, fee_minor, currency, quality_score, state, \
    provider_ref, failure_reason, clawed_back, attempts, next_attempt_at, version, budget_period, \
    customer_day, customer_month, purchased_at, created_at, submitted_at, finished_at, updated_at";

const FEEDBACK_COLUMNS: &str = "id, business_id, location_id, customer_ref, \
    provider_transaction_id, amount_minor, currency, purchased_at, quality_score, destination, \
    state, reason, purchase_ref, received_at, match_deadline, reviewed_by, review_note";

/// Stores a feedback as `waiting`; false when its id is stored already.
pub async fn insert_feedback(
    pool: &AnyPool,
    feedback: &Feedback,
    received_at: DateTime<Utc>,
    match_deadline: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let purchase = &feedback.purchase;
    let result = sqlx::query(
        "INSERT INTO feedback (id, business_id, location_id, customer_ref, \
         provider_transaction_id, amount_minor, currency, purchased_at, quality_score, \
         destination, state, received_at, match_deadline, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&feedback.feedback_id)
    .bind(&feedback.business_id)
    .bind(&feedback.location_id)
    .bind(&feedback.customer_ref)
    .bind(purchase.provider_transaction_id.as_deref())
    .bind(purchase.amount_minor)
    .bind(purchase.currency.as_deref())
    .bind(purchase.occurred_at.map(format_time))
    .bind(i64::from(feedback.quality_score))
    .bind(to_json(&feedback.payout)?)
    .bind(FeedbackState::Waiting.as_str())
    .bind(format_time(received_at))
    .bind(format_time(match_deadline))
    .bind(format_time(received_at))
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn feedback(pool: &AnyPool, id: &str) -> Result<Option<FeedbackRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(feedback_from_row).transpose()
}

/// Feedback in `state`, oldest first.
pub async fn feedback_in_state(
    pool: &AnyPool,
    state: FeedbackState,
    limit: i64,
) -> Result<Vec<FeedbackRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE state = $1 \
         ORDER BY received_at, id LIMIT $2"
    ))
    .bind(state.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(feedback_from_row).collect()
}

/// Moves a feedback from `from` to `to` with a reason; false when it was no
/// longer in `from`.
pub async fn set_feedback_state(
    pool: &AnyPool,
    id: &str,
    from: FeedbackState,
    to: FeedbackState,
    reason: Option<&str>,
    review: Option<&Review>,
) -> Result<bool, StoreError> {
    let now = format_time(Utc::now());
    let result = sqlx::query(
        "UPDATE feedback SET state = $1, reason = $2, updated_at = $3, \
         reviewed_by = COALESCE($4, reviewed_by), review_note = COALESCE($5, review_note), \
         reviewed_at = CASE WHEN $4 IS NULL THEN reviewed_at ELSE $3 END \
         WHERE id = $6 AND state = $7",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(&now)
    .bind(review.map(|r| r.reviewer.as_str()))
    .bind(review.map(|r| r.note.as_str()))
    .bind(id)
    .bind(from.as_str())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Matches `record` (in the state it was read in) to `purchase`: decides
/// the reward, reserves it against the caps and the budget, and writes the
/// settlement, its `reserve` journal and its first event, all at once.
pub async fn settle(
    pool: &AnyPool,
    record: &FeedbackRecord,
    purchase: &MatchedPurchase,
    rules: &RewardRules,
    review: Option<&Review>,
) -> Result<SettleOutcome, StoreError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let mut tx = pool.begin().await?;
        match try_settle(&mut tx, record, purchase, rules, review).await? {
            Attempt::Done(outcome) => {
                tx.commit().await?;
                return Ok(outcome);
            }
            Attempt::Undo(outcome) => {
                tx.rollback().await?;
                // A reviewer who chose a purchase that is taken is told so
                // and may choose again; matching has nothing else to try.
                if outcome == SettleOutcome::PurchaseTaken && review.is_none() {
                    set_feedback_state(
                        pool,
                        &record.feedback.feedback_id,
                        record.state,
                        FeedbackState::NotRewarded,
                        Some("purchase_already_rewarded"),
                        review,
                    )
                    .await?;
                }
                return Ok(outcome);
            }
            Attempt::Conflict => tx.rollback().await?,
        }
    }
    Err(StoreError::Contended)
}

enum Attempt {
    Done(SettleOutcome),
    /// Roll back and report.
    Undo(SettleOutcome),
    /// A concurrent writer moved a counter in between: try again.
    Conflict,
}

async fn try_settle(
    tx: &mut Transaction<'_, Any>,
    record: &FeedbackRecord,
    purchase: &MatchedPurchase,
    rules: &RewardRules,
    review: Option<&Review>,
) -> Result<Attempt, StoreError> {
    let feedback = &record.feedback;
    let now = Utc::now();
    let claimed = sqlx::query(
        "UPDATE feedback SET state = $1, purchase_ref = $2, reason = NULL, updated_at = $3, \
         reviewed_by = COALESCE($4, reviewed_by), review_note = COALESCE($5, review_note), \
         reviewed_at = CASE WHEN $4 IS NULL THEN reviewed_at ELSE $3 END \
         WHERE id = $6 AND state = $7",
    )
    .bind(FeedbackState::Matched.as_str())
    .bind(&purchase.purchase_ref)
    .bind(format_time(now))
    .bind(review.map(|r| r.reviewer.as_str()))
    .bind(review.map(|r| r.note.as_str()))
    .bind(&feedback.feedback_id)
    .bind(record.state.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if claimed == 0 {
        return Ok(Attempt::Undo(SettleOutcome::AlreadyDecided));
    }

    let periods = Periods::of(now);
    let customer = format!("{}:{}", feedback.business_id, feedback.customer_ref);
    let counters = [
        (
            "business_month",
            feedback.business_id.as_str(),
            periods.month.as_str(),
            rules.monthly_budget_minor,
        ),
        (
            "customer_day",
            customer.as_str(),
            periods.day.as_str(),
            rules.customer_daily_cap_minor,
        ),
        (
            "customer_month",
            customer.as_str(),
            periods.month.as_str(),
            rules.customer_monthly_cap_minor,
        ),
    ];
    let mut used = [0i64; 3];
    for (slot, (scope, subject, period, _)) in counters.iter().enumerate() {
        used[slot] = read_counter(tx, scope, subject, period).await?;
    }
    let spent = Spent {
        business_month_minor: used[0],
        customer_day_minor: used[1],
        customer_month_minor: used[2],
    };
    let decided = reward::decide(
        rules,
        purchase.amount_minor,
        &purchase.currency,
        feedback.quality_score,
        spent,
    );
    let reward = match decided {
        Ok(reward) => reward,
        Err(no_reward) => {
            sqlx::query("UPDATE feedback SET state = $1, reason = $2 WHERE id = $3")
                .bind(FeedbackState::NotRewarded.as_str())
                .bind(no_reward.as_str())
                .bind(&feedback.feedback_id)
                .execute(&mut **tx)
                .await?;
            return Ok(Attempt::Done(SettleOutcome::NotRewarded(no_reward)));
        }
    };
    let costs = [
        reward.cost_minor(),
        reward.amount_minor,
        reward.amount_minor,
    ];
    for ((scope, subject, period, limit), cost) in counters.iter().zip(costs) {
        if !reserve_counter(tx, scope, subject, period, cost, *limit).await? {
            return Ok(Attempt::Conflict);
        }
    }

    let settlement = Settlement {
        id: settlement_id(&feedback.feedback_id),
        feedback_id: feedback.feedback_id.clone(),
        purchase_ref: purchase.purchase_ref.clone(),
        business_id: feedback.business_id.clone(),
        customer_ref: feedback.customer_ref.clone(),
        destination: feedback.payout.clone(),
        purchase_amount_minor: purchase.amount_minor,
        amount_minor: reward.amount_minor,
        fee_minor: reward.fee_minor,
        currency: purchase.currency.to_ascii_uppercase(),
        quality_score: i64::from(feedback.quality_score),
        state: SettlementState::Pending,
        provider_ref: None,
        failure_reason: None,
        clawed_back: false,
        attempts: 0,
        next_attempt_at: now,
        version: 1,
        budget_period: periods.month.clone(),
        customer_day: periods.day,
        customer_month: periods.month,
        purchased_at: purchase.occurred_at,
        created_at: now,
        submitted_at: None,
        finished_at: None,
        updated_at: now,
    };
    if !insert_settlement(tx, &settlement).await? {
        return Ok(Attempt::Undo(SettleOutcome::PurchaseTaken));
    }
    ledger::post(tx, &settlement.posting(), JournalKind::Reserve).await?;
    write_event(tx, &settlement, None).await?;
    Ok(Attempt::Done(SettleOutcome::Settled(Box::new(settlement))))
}

/// The Stockholm day and month a reservation counts against.
struct Periods {
    day: String,
    month: String,
}

impl Periods {
    fn of(instant: DateTime<Utc>) -> Periods {
        let local = instant.with_timezone(&chrono_tz::Europe::Stockholm);
        Periods {
            day: local.format("%Y-%m-%d").to_string(),
            month: local.format("%Y-%m").to_string(),
        }
    }
}

async fn read_counter(
    tx: &mut Transaction<'_, Any>,
    scope: &str,
    subject: &str,
    period: &str,
) -> Result<i64, StoreError> {
    sqlx::query(
        "INSERT INTO spend_counters (scope, subject, period, used_minor) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (scope, subject, period) DO NOTHING",
    )
    .bind(scope)
    .bind(subject)
    .bind(period)
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(
        "SELECT used_minor FROM spend_counters WHERE scope = $1 AND subject = $2 AND period = $3",
    )
    .bind(scope)
    .bind(subject)
    .bind(period)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("used_minor")?)
}

/// Adds `amount` unless that would pass `limit`; false when it would (a
/// concurrent reservation came first).
async fn reserve_counter(
    tx: &mut Transaction<'_, Any>,
    scope: &str,
    subject: &str,
    period: &str,
    amount_minor: i64,
    limit_minor: i64,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE spend_counters SET used_minor = used_minor + $1 \
         WHERE scope = $2 AND subject = $3 AND period = $4 AND used_minor + $1 <= $5",
    )
    .bind(amount_minor)
    .bind(scope)
    .bind(subject)
    .bind(period)
    .bind(limit_minor)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Gives a released settlement's reservation back.
async fn restore_counters(
    tx: &mut Transaction<'_, Any>,
    settlement: &Settlement,
) -> Result<(), StoreError> {
    let customer = format!("{}:{}", settlement.business_id, settlement.customer_ref);
    let cost = settlement.amount_minor + settlement.fee_minor;
    let restores = [
        (
            "business_month",
            settlement.business_id.as_str(),
            settlement.budget_period.as_str(),
            cost,
        ),
        (
            "customer_day",
            customer.as_str(),
            settlement.customer_day.as_str(),
            settlement.amount_minor,
        ),
        (
            "customer_month",
            customer.as_str(),
            settlement.customer_month.as_str(),
            settlement.amount_minor,
        ),
    ];
    for (scope, subject, period, amount) in restores {
        sqlx::query(
            "UPDATE spend_counters SET used_minor = used_minor - $1 \
             WHERE scope = $2 AND subject = $3 AND period = $4",
        )
        .bind(amount)
        .bind(scope)
        .bind(subject)
        .bind(period)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn insert_settlement(
    tx: &mut Transaction<'_, Any>,
    s: &Settlement,
) -> Result<bool, StoreError> {
    let result = sqlx::query(&format!(
        "INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20, $21, $22, $23, $24, $25, $26, $27) ON CONFLICT DO NOTHING"
    ))
    .bind(s.id.to_string())
    .bind(&s.feedback_id)
    .bind(&s.purchase_ref)
    .bind(&s.business_id)
    .bind(&s.customer_ref)
    .bind(s.rail().as_str())
    .bind(to_json(&s.destination)?)
    .bind(s.purchase_amount_minor)
    .bind(s.amount_minor)
    .bind(s.fee_minor)
    .bind(&s.currency)
    .bind(s.quality_score)
    .bind(s.state.as_str())
    .bind(s.provider_ref.as_deref())
    .bind(s.failure_reason.as_deref())
    .bind(i64::from(s.clawed_back))
    .bind(s.attempts)
    .bind(format_time(s.next_attempt_at))
    .bind(s.version)
    .bind(&s.budget_period)
    .bind(&s.customer_day)
    .bind(&s.customer_month)
    .bind(format_time(s.purchased_at))
    .bind(format_time(s.created_at))
    .bind(s.submitted_at.map(format_time))
    .bind(s.finished_at.map(format_time))
    .bind(format_time(s.updated_at))
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Applies `change` to `current` if nobody changed it since it was read.
/// `None`: it moved on meanwhile (read it again), or the change does not
/// apply to its state (a late webhook about a settled payout).
pub async fn change(
    pool: &AnyPool,
    current: &Settlement,
    change: Change,
) -> Result<Option<Settlement>, StoreError> {
    let Some(next) = successor(current, &change, Utc::now()) else {
        return Ok(None);
    };
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE settlements SET state = $1, provider_ref = $2, failure_reason = $3, \
         clawed_back = $4, attempts = $5, next_attempt_at = $6, version = $7, submitted_at = $8, \
         finished_at = $9, updated_at = $10, lease_owner = NULL, lease_until = NULL \
         WHERE id = $11 AND version = $12",
    )
    .bind(next.state.as_str())
    .bind(next.provider_ref.as_deref())
    .bind(next.failure_reason.as_deref())
    .bind(i64::from(next.clawed_back))
    .bind(next.attempts)
    .bind(format_time(next.next_attempt_at))
    .bind(next.version)
    .bind(next.submitted_at.map(format_time))
    .bind(next.finished_at.map(format_time))
    .bind(format_time(next.updated_at))
    .bind(current.id.to_string())
    .bind(current.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let journal = match change {
        Change::Paid { .. } => Some(JournalKind::Payout),
        Change::Failed { .. } | Change::Canceled { .. } => Some(JournalKind::Release),
        Change::ClawBack => Some(JournalKind::Clawback),
        _ => None,
    };
    if let Some(kind) = journal {
        ledger::post(&mut tx, &next.posting(), kind).await?;
    }
    if kind_releases(&change) {
        restore_counters(&mut tx, &next).await?;
    }
    if !matches!(change, Change::Retry { .. } | Change::Recheck { .. }) {
        write_event(&mut tx, &next, Some(current.state)).await?;
    }
    tx.commit().await?;
    Ok(Some(next))
}

fn kind_releases(change: &Change) -> bool {
    matches!(change, Change::Failed { .. } | Change::Canceled { .. })
}

/// The settlement after `change`, or `None` when it does not apply.
fn successor(current: &Settlement, change: &Change, now: DateTime<Utc>) -> Option<Settlement> {
    use SettlementState::{Canceled, Failed, Paid, Pending, Submitted};

    let mut next = current.clone();
    next.updated_at = now;
    match change {
        Change::Submitted {
            provider_ref,
            check_at,
        } if current.state == Pending => {
            next.state = Submitted;
            next.provider_ref = Some(provider_ref.clone());
            next.submitted_at = Some(now);
            next.next_attempt_at = *check_at;
            next.attempts += 1;
        }
        Change::Paid { provider_ref } if matches!(current.state, Pending | Submitted) => {
            next.state = Paid;
            if provider_ref.is_some() {
                next.provider_ref = provider_ref.clone();
            }
            next.submitted_at = next.submitted_at.or(Some(now));
            next.finished_at = Some(now);
        }
        Change::Failed {
            provider_ref,
            reason,
        } if matches!(current.state, Pending | Submitted) => {
            next.state = Failed;
            if provider_ref.is_some() {
                next.provider_ref = provider_ref.clone();
            }
            next.failure_reason = Some(reason.clone());
            next.finished_at = Some(now);
        }
        Change::Canceled { reason } if current.state == Pending => {
            next.state = Canceled;
            next.failure_reason = Some(reason.clone());
            next.finished_at = Some(now);
        }
        Change::Retry { next_attempt_at } if matches!(current.state, Pending | Submitted) => {
            // A submission was counted before its call; a status check is
            // counted here, so the pauses between either double.
            if current.state == Submitted {
                next.attempts += 1;
            }
            next.next_attempt_at = *next_attempt_at;
        }
        Change::Recheck { check_at } if current.state == Submitted => {
            next.next_attempt_at = *check_at;
        }
        Change::ClawBack if current.state == Paid && !current.clawed_back => {
            next.clawed_back = true;
        }
        _ => return None,
    }
    next.version += 1;
    Some(next)
}

/// Writes the settlement event for this version into the outbox.
async fn write_event(
    tx: &mut Transaction<'_, Any>,
    settlement: &Settlement,
    previous: Option<SettlementState>,
) -> Result<(), StoreError> {
    let payload = super::engine::settlement_event(settlement, previous);
    sqlx::query(
        "INSERT INTO settlement_outbox (id, settlement_id, payload, published, created_at) \
         VALUES ($1, $2, $3, 0, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(format!("{}:{:010}", settlement.id, settlement.version))
    .bind(settlement.id.to_string())
    .bind(payload)
    .bind(format_time(settlement.updated_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn settlement(pool: &AnyPool, id: &str) -> Result<Option<Settlement>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(settlement_from_row).transpose()
}

/// The settlement whose payout the provider knows as `provider_ref`.
pub async fn settlement_by_provider_ref(
    pool: &AnyPool,
    provider_ref: &str,
) -> Result<Option<Settlement>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE provider_ref = $1"
    ))
    .bind(provider_ref)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(settlement_from_row).transpose()
}

/// Settlements that are not final and whose next step is due, unleased.
pub async fn due_settlements(
    pool: &AnyPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Settlement>, StoreError> {
    let now = format_time(now);
    let rows = sqlx::query(&format!(
        "SELECT {SETTLEMENT_COLUMNS} FROM settlements \
         WHERE state IN ('pending', 'submitted') AND next_attempt_at <= $1 \
         AND (lease_until IS NULL OR lease_until < $1) \
         ORDER BY next_attempt_at, id LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(settlement_from_row).collect()
}

/// Takes a settlement for `lease` so no other instance pays it meanwhile;
/// false when another instance holds it or it changed since it was read.
pub async fn lease(
    pool: &AnyPool,
    settlement: &Settlement,
    owner: &str,
    lease: Duration,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let result = sqlx::query(
        "UPDATE settlements SET lease_owner = $1, lease_until = $2 \
         WHERE id = $3 AND version = $4 AND (lease_until IS NULL OR lease_until < $5)",
    )
    .bind(owner)
    .bind(format_time(now + lease))
    .bind(settlement.id.to_string())
    .bind(settlement.version)
    .bind(format_time(now))
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Asks for a submitted payout's state to be checked at once (a Swish
/// callback or a Stripe payout webhook: a hint, never trusted on its own).
pub async fn recheck_now(
    pool: &AnyPool,
    provider_ref: &str,
    rail: Rail,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE settlements SET next_attempt_at = $1 \
         WHERE provider_ref = $2 AND rail = $3 AND state = 'submitted'",
    )
    .bind(format_time(Utc::now()))
    .bind(provider_ref)
    .bind(rail.as_str())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Settlements whose purchase the provider has since refunded and that are
/// not yet canceled or clawed back.
pub async fn refunded_settlements(
    pool: &AnyPool,
    limit: i64,
) -> Result<Vec<Settlement>, StoreError> {
    let columns = SETTLEMENT_COLUMNS
        .split(", ")
        .map(|c| format!("s.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM settlements s JOIN transactions t ON t.id = s.purchase_ref \
         WHERE t.state = 'refunded' \
         AND (s.state = 'pending' OR (s.state = 'paid' AND s.clawed_back = 0)) \
         ORDER BY s.updated_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(settlement_from_row).collect()
}

/// Settlement events not yet on `kvitto.settlements`, oldest first.
pub async fn unpublished_events(
    pool: &AnyPool,
    limit: i64,
) -> Result<Vec<(String, String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, settlement_id, payload FROM settlement_outbox WHERE published = 0 \
         ORDER BY created_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                row.try_get("settlement_id")?,
                row.try_get("payload")?,
            ))
        })
        .collect()
}

pub async fn mark_event_published(pool: &AnyPool, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE settlement_outbox SET published = 1 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Counts settlements by state (metrics, tests, the CLI).
pub async fn count_settlements(pool: &AnyPool, state: SettlementState) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM settlements WHERE state = $1")
        .bind(state.as_str())
        .fetch_one(pool)
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// The most recently changed settlements, newest first.
pub async fn recent_settlements(pool: &AnyPool, limit: i64) -> Result<Vec<Settlement>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SETTLEMENT_COLUMNS} FROM settlements ORDER BY updated_at DESC, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(settlement_from_row).collect()
}

/// Records a business's Stripe connected account.
pub async fn upsert_stripe_account(
    pool: &AnyPool,
    account_id: &str,
    business_id: Option<&str>,
    flags: [bool; 3],
) -> Result<(), StoreError> {
    let now = format_time(Utc::now());
    let [charges, payouts, details] = flags.map(i64::from);
    match business_id {
        Some(business_id) => {
            sqlx::query(
                "INSERT INTO stripe_accounts (account_id, business_id, charges_enabled, \
                 payouts_enabled, details_submitted, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (account_id) DO NOTHING",
            )
            .bind(account_id)
            .bind(business_id)
            .bind(charges)
            .bind(payouts)
            .bind(details)
            .bind(&now)
            .execute(pool)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE stripe_accounts SET charges_enabled = $1, payouts_enabled = $2, \
                 details_submitted = $3, updated_at = $4 WHERE account_id = $5",
            )
            .bind(charges)
            .bind(payouts)
            .bind(details)
            .bind(&now)
            .bind(account_id)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// The connected account of a business, with whether it can take payouts.
pub async fn stripe_account_of(
    pool: &AnyPool,
    business_id: &str,
) -> Result<Option<(String, bool)>, StoreError> {
    let row = sqlx::query(
        "SELECT account_id, payouts_enabled FROM stripe_accounts WHERE business_id = $1",
    )
    .bind(business_id)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok((
            row.try_get("account_id")?,
            row.try_get::<i64, _>("payouts_enabled")? != 0,
        ))
    })
    .transpose()
}

fn feedback_from_row(row: &AnyRow) -> Result<FeedbackRecord, StoreError> {
    let state: String = row.try_get("state")?;
    let purchased_at: Option<String> = row.try_get("purchased_at")?;
    let quality_score: i64 = row.try_get("quality_score")?;
    let feedback = Feedback {
        feedback_id: row.try_get("id")?,
        business_id: row.try_get("business_id")?,
        location_id: row.try_get("location_id")?,
        customer_ref: row.try_get("customer_ref")?,
        purchase: PurchaseHint {
            provider_transaction_id: row.try_get("provider_transaction_id")?,
            amount_minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
            occurred_at: purchased_at.as_deref().map(parse_time).transpose()?,
        },
        quality_score: u8::try_from(quality_score)
            .map_err(|_| StoreError::Corrupt(format!("quality score {quality_score}")))?,
        payout: from_json(&row.try_get::<String, _>("destination")?)?,
    };
    Ok(FeedbackRecord {
        feedback,
        state: FeedbackState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("feedback state {state:?}")))?,
        reason: row.try_get("reason")?,
        purchase_ref: row.try_get("purchase_ref")?,
        received_at: parse_time(&row.try_get::<String, _>("received_at")?)?,
        match_deadline: parse_time(&row.try_get::<String, _>("match_deadline")?)?,
        reviewed_by: row.try_get("reviewed_by")?,
        review_note: row.try_get("review_note")?,
    })
}

fn settlement_from_row(row: &AnyRow) -> Result<Settlement, StoreError> {
    let time = |column: &str| -> Result<DateTime<Utc>, StoreError> {
        parse_time(&row.try_get::<String, _>(column)?)
    };
    let optional_time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<String>, _>(column)?
            .as_deref()
            .map(parse_time)
            .transpose()
    };
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    Ok(Settlement {
        id: Uuid::parse_str(&id).map_err(|_| StoreError::Corrupt(format!("settlement id {id}")))?,
        feedback_id: row.try_get("feedback_id")?,
        purchase_ref: row.try_get("purchase_ref")?,
        business_id: row.try_get("business_id")?,
        customer_ref: row.try_get("customer_ref")?,
        destination: from_json(&row.try_get::<String, _>("destination")?)?,
        purchase_amount_minor: row.try_get("purchase_amount_minor")?,
        amount_minor: row.try_get("amount_minor")?,
        fee_minor: row.try_get("fee_minor")?,
        currency: row.try_get("currency")?,
        quality_score: row.try_get("quality_score")?,
        state: SettlementState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("settlement state {state:?}")))?,
        provider_ref: row.try_get("provider_ref")?,
        failure_reason: row.try_get("failure_reason")?,
        clawed_back: row.try_get::<i64, _>("clawed_back")? != 0,
        attempts: row.try_get("attempts")?,
        next_attempt_at: time("next_attempt_at")?,
        version: row.try_get("version")?,
        budget_period: row.try_get("budget_period")?,
        customer_day: row.try_get("customer_day")?,
        customer_month: row.try_get("customer_month")?,
        purchased_at: time("purchased_at")?,
        created_at: time("created_at")?,
        submitted_at: optional_time("submitted_at")?,
        finished_at: optional_time("finished_at")?,
        updated_at: time("updated_at")?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(value: &str) -> Result<T, StoreError> {
    serde_json::from_str(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Counts a payout call about to be made (before it is made).
pub async fn count_attempt(pool: &AnyPool, settlement: &Settlement) -> Result<(), StoreError> {
    sqlx::query("UPDATE settlements SET attempts = attempts + 1 WHERE id = $1 AND version = $2")
        .bind(settlement.id.to_string())
        .bind(settlement.version)
        .execute(pool)
        .await?;
    Ok(())
}

/// Since when the oldest unfinished settlements have waited: the oldest
/// `pending` one since it was written (no provider has taken its payout),
/// and the oldest `submitted` one since its submission (the provider has
/// it and has not finished it).
pub async fn oldest_unfinished(pool: &AnyPool) -> Result<OldestUnfinished, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT MIN(created_at) FROM settlements WHERE state = 'pending') AS pending, \
         (SELECT MIN(COALESCE(submitted_at, created_at)) FROM settlements \
          WHERE state = 'submitted') AS submitted",
    )
    .fetch_one(pool)
    .await?;
    let time = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<String>, _>(column)?
            .as_deref()
            .map(parse_time)
            .transpose()
    };
    Ok(OldestUnfinished {
        pending_since: time("pending")?,
        submitted_since: time("submitted")?,
    })
}

/// What [`oldest_unfinished`] found; `None` where no settlement is in
/// that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldestUnfinished {
    pub pending_since: Option<DateTime<Utc>>,
    pub submitted_since: Option<DateTime<Utc>>,
}

/// How many settlements are in each state, with what they amount to.
pub async fn settlement_totals(pool: &AnyPool) -> Result<Vec<StateTotal>, StoreError> {
    let rows = sqlx::query(
        "SELECT state, currency, COUNT(*) AS n, CAST(SUM(amount_minor) AS BIGINT) AS amount \
         FROM settlements GROUP BY state, currency ORDER BY state, currency",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StateTotal {
                state: row.try_get("state")?,
                currency: row.try_get("currency")?,
                count: row.try_get("n")?,
                amount_minor: row.try_get("amount")?,
            })
        })
        .collect()
}

/// One line of [`settlement_totals`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTotal {
    pub state: String,
    pub currency: String,
    pub count: i64,
    pub amount_minor: i64,
}

/// How many feedback messages are in each state.
pub async fn feedback_totals(pool: &AnyPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows =
        sqlx::query("SELECT state, COUNT(*) AS n FROM feedback GROUP BY state ORDER BY state")
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
        .collect()
}
