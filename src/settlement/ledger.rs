//! The double-entry ledger of rewards.
//!
//! Every money movement kvitto decides is one journal of entries that sum
//! to zero (debits positive, credits negative), written in the same database
//! transaction as the settlement state it accounts for. Entries are only
//! ever inserted; `(settlement_id, kind)` is unique, so a retried step posts
//! nothing twice. Balances are sums of entries, and [`check`] proves them
//! against the settlements.
//!
//! The postings of one settlement:
//!
//! | kind | when | debit | credit |
//! |---|---|---|---|
//! | `reserve` | the reward is decided | the business's budget: reward + fee | customers payable: reward; platform fees: fee |
//! | `payout` | the provider paid the customer | customers payable | provider clearing of the rail |
//! | `release` | the payout failed, or the purchase was refunded first | customers payable; platform fees | the business's budget |
//! | `clawback` | the purchase was refunded after the payout | the business's claw-backs owed | platform claw-backs |

use chrono::Utc;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use super::Rail;
use crate::store::{StoreError, format_time};

pub const CUSTOMERS_PAYABLE: &str = "customers:payable";
pub const PLATFORM_FEES: &str = "platform:fees";
pub const PLATFORM_CLAWBACKS: &str = "platform:clawbacks";

pub fn business_budget(business_id: &str) -> String {
    format!("business:{business_id}:budget")
}

pub fn business_clawbacks(business_id: &str) -> String {
    format!("business:{business_id}:clawbacks")
}

pub fn provider_clearing(rail: Rail) -> String {
    format!("clearing:{rail}")
}

/// What a journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalKind {
    Reserve,
    Payout,
    Release,
    Clawback,
}

impl JournalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalKind::Reserve => "reserve",
            JournalKind::Payout => "payout",
            JournalKind::Release => "release",
            JournalKind::Clawback => "clawback",
        }
    }
}

/// The amounts of one settlement that its postings move.
#[derive(Debug, Clone)]
pub struct Posting<'a> {
    pub settlement_id: Uuid,
    pub business_id: &'a str,
    pub rail: Rail,
    pub amount_minor: i64,
    pub fee_minor: i64,
    pub currency: &'a str,
}

impl Posting<'_> {
    /// The entries of one kind of journal; they sum to zero.
    pub fn entries(&self, kind: JournalKind) -> Vec<(String, i64)> {
        let (amount, fee) = (self.amount_minor, self.fee_minor);
        let budget = business_budget(self.business_id);
        let mut entries = match kind {
            JournalKind::Reserve => vec![
                (budget, amount + fee),
                (CUSTOMERS_PAYABLE.into(), -amount),
                (PLATFORM_FEES.into(), -fee),
            ],
            JournalKind::Payout => vec![
                (CUSTOMERS_PAYABLE.into(), amount),
                (provider_clearing(self.rail), -amount),
            ],
            JournalKind::Release => vec![
                (CUSTOMERS_PAYABLE.into(), amount),
                (PLATFORM_FEES.into(), fee),
                (budget, -(amount + fee)),
            ],
            JournalKind::Clawback => vec![
                (business_clawbacks(self.business_id), amount),
                (PLATFORM_CLAWBACKS.into(), -amount),
            ],
        };
        entries.retain(|(_, minor)| *minor != 0);
        entries
    }
}

/// Posts one journal; false when this settlement already has one of this
/// kind (a retried step), in which case nothing is written.
pub async fn post(
    tx: &mut Transaction<'_, Any>,
    posting: &Posting<'_>,
    kind: JournalKind,
) -> Result<bool, StoreError> {
    let journal_id = Uuid::new_v4().to_string();
    let inserted = sqlx::query(
        "INSERT INTO ledger_journals (id, settlement_id, kind, currency, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (settlement_id, kind) DO NOTHING",
    )
    .bind(&journal_id)
    .bind(posting.settlement_id.to_string())
    .bind(kind.as_str())
    .bind(posting.currency)
    .bind(format_time(Utc::now()))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    for (account, amount_minor) in posting.entries(kind) {
        sqlx::query(
            "INSERT INTO ledger_entries (journal_id, account, amount_minor) VALUES ($1, $2, $3)",
        )
        .bind(&journal_id)
        .bind(account)
        .bind(amount_minor)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

/// One account's balance (debits minus credits).
pub async fn balance<'e, E>(executor: E, account: &str) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS balance \
         FROM ledger_entries WHERE account = $1",
    )
    .bind(account)
    .fetch_one(executor)
    .await?;
    Ok(row.try_get::<i64, _>("balance")?)
}

/// Every account with its balance, by name.
pub async fn balances(pool: &sqlx::AnyPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT account, CAST(SUM(amount_minor) AS BIGINT) AS balance \
         FROM ledger_entries GROUP BY account ORDER BY account",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("account")?, row.try_get("balance")?)))
        .collect()
}

/// What [`check`] found wrong; empty when the ledger is sound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerReport {
    pub problems: Vec<String>,
}

impl LedgerReport {
    pub fn is_balanced(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Proves the ledger: every journal balances, and the balances agree with
/// the settlements they account for (customers payable is what is reserved
/// and not yet paid or released; each rail's clearing is what it paid; the
/// fees are those of unreleased settlements; claw-backs are those recorded).
pub async fn check(pool: &sqlx::AnyPool) -> Result<LedgerReport, StoreError> {
    // Every read below sees one snapshot: on PostgreSQL a repeatable-read
    // transaction, on SQLite (WAL) any read transaction.
    let mut tx = pool.begin().await?;
    if tx.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    let mut report = LedgerReport::default();
    let unbalanced = sqlx::query(
        "SELECT journal_id, CAST(SUM(amount_minor) AS BIGINT) AS total FROM ledger_entries \
         GROUP BY journal_id HAVING SUM(amount_minor) <> 0",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &unbalanced {
        let id: String = row.try_get("journal_id")?;
        let total: i64 = row.try_get("total")?;
        report
            .problems
            .push(format!("journal {id} does not balance: {total}"));
    }
    let expected = [
        (
            CUSTOMERS_PAYABLE.to_string(),
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS v FROM settlements \
             WHERE state IN ('pending', 'submitted')",
            -1,
        ),
        (
            PLATFORM_FEES.to_string(),
            "SELECT CAST(COALESCE(SUM(fee_minor), 0) AS BIGINT) AS v FROM settlements \
             WHERE state IN ('pending', 'submitted', 'paid')",
            -1,
        ),
        (
            provider_clearing(Rail::Stripe),
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS v FROM settlements \
             WHERE state = 'paid' AND rail = 'stripe'",
            -1,
        ),
        (
            provider_clearing(Rail::Swish),
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS v FROM settlements \
             WHERE state = 'paid' AND rail = 'swish'",
            -1,
        ),
        (
            PLATFORM_CLAWBACKS.to_string(),
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS v FROM settlements \
             WHERE clawed_back = 1",
            -1,
        ),
    ];
    for (account, query, sign) in expected {
        let row = sqlx::query(query).fetch_one(&mut *tx).await?;
        let want = sign * row.try_get::<i64, _>("v")?;
        let have = balance(&mut *tx, &account).await?;
        if have != want {
            report
                .problems
                .push(format!("{account} holds {have}, settlements say {want}"));
        }
    }
    let total = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS v FROM ledger_entries",
    )
    .fetch_one(&mut *tx)
    .await?
    .try_get::<i64, _>("v")?;
    if total != 0 {
        report
            .problems
            .push(format!("the ledger as a whole is off by {total}"));
    }
    tx.rollback().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posting() -> Posting<'static> {
        Posting {
            settlement_id: Uuid::nil(),
            business_id: "b",
            rail: Rail::Swish,
            amount_minor: 747,
            fee_minor: 74,
            currency: "SEK",
        }
    }

    #[test]
    fn every_kind_of_journal_balances() {
        for kind in [
            JournalKind::Reserve,
            JournalKind::Payout,
            JournalKind::Release,
            JournalKind::Clawback,
        ] {
            let entries = posting().entries(kind);
            assert!(!entries.is_empty(), "{kind:?}");
            assert_eq!(entries.iter().map(|(_, m)| m).sum::<i64>(), 0, "{kind:?}");
        }
    }

    #[test]
    fn release_undoes_reserve_exactly() {
        let mut by_account = std::collections::BTreeMap::<String, i64>::new();
        for kind in [JournalKind::Reserve, JournalKind::Release] {
            for (account, minor) in posting().entries(kind) {
                *by_account.entry(account).or_default() += minor;
            }
        }
        assert!(by_account.values().all(|v| *v == 0), "{by_account:?}");
    }

    #[test]
    fn zero_fee_writes_no_zero_entry() {
        let mut posting = posting();
        posting.fee_minor = 0;
        let entries = posting.entries(JournalKind::Reserve);
        assert_eq!(entries.len(), 2);
    }
}
