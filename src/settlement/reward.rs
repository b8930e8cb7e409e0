//! How much a reward is: the business's tier for the feedback's score, as a
//! share of the purchase, within the per-reward cap, the customer's daily
//! and monthly caps and the business's monthly budget.
//!
//! Everything is integer minor units. The rounding rule: every share (the
//! tier's percentage of the purchase, the platform fee's percentage of the
//! reward) is rounded down to whole öre, so kvitto never promises a
//! fraction of an öre and never spends past a cap or a budget by rounding.

use super::config::RewardRules;

const BASIS_POINTS: i128 = 10_000;

/// What has been spent already in the periods this reward would fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    pub customer_day_minor: i64,
    pub customer_month_minor: i64,
    pub business_month_minor: i64,
}

/// Why feedback earns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReward {
    /// The score is below the lowest tier, or the share rounds to zero.
    BelowTiers,
    /// The purchase is not in the business's reward currency.
    CurrencyNotRewarded,
    /// The customer has reached a daily or monthly cap.
    CustomerCapReached,
    /// The business's budget for the month cannot cover reward and fee.
    BudgetExhausted,
}

impl NoReward {
    pub fn as_str(self) -> &'static str {
        match self {
            NoReward::BelowTiers => "below_tiers",
            NoReward::CurrencyNotRewarded => "currency_not_rewarded",
            NoReward::CustomerCapReached => "customer_cap_reached",
            NoReward::BudgetExhausted => "budget_exhausted",
        }
    }
}

/// A reward kvitto will pay, and the fee the business pays beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reward {
    pub amount_minor: i64,
    pub fee_minor: i64,
    /// The tier that applied, in basis points of the purchase.
    pub tier_bp: u32,
}

impl Reward {
    /// What the business's budget is charged.
    pub fn cost_minor(&self) -> i64 {
        self.amount_minor + self.fee_minor
    }
}

/// `value × bp / 10 000`, rounded down; never negative for non-negative
/// input, never overflows.
pub fn share_rounded_down(value_minor: i64, bp: u32) -> i64 {
    let share = i128::from(value_minor.max(0)) * i128::from(bp) / BASIS_POINTS;
    i64::try_from(share).unwrap_or(i64::MAX)
}

/// The tier for a score: the highest one whose `min_score` it reaches.
pub fn tier_for(rules: &RewardRules, quality_score: u8) -> Option<u32> {
    rules
        .tiers
        .iter()
        .filter(|tier| quality_score >= tier.min_score)
        .max_by_key(|tier| tier.min_score)
        .map(|tier| tier.percent_bp)
}

/// Decides the reward for one matched purchase.
pub fn decide(
    rules: &RewardRules,
    purchase_amount_minor: i64,
    purchase_currency: &str,
    quality_score: u8,
    spent: Spent,
) -> Result<Reward, NoReward> {
    if !purchase_currency.eq_ignore_ascii_case(&rules.currency) {
        return Err(NoReward::CurrencyNotRewarded);
    }
    let tier_bp = tier_for(rules, quality_score).ok_or(NoReward::BelowTiers)?;
    let by_tier = share_rounded_down(purchase_amount_minor, tier_bp).min(rules.max_reward_minor);
    if by_tier <= 0 {
        return Err(NoReward::BelowTiers);
    }
    let customer_left = (rules.customer_daily_cap_minor - spent.customer_day_minor)
        .min(rules.customer_monthly_cap_minor - spent.customer_month_minor);
    let amount_minor = by_tier.min(customer_left);
    if amount_minor <= 0 {
        return Err(NoReward::CustomerCapReached);
    }
    let reward = Reward {
        amount_minor,
        fee_minor: share_rounded_down(amount_minor, rules.platform_fee_bp),
        tier_bp,
    };
    if reward.cost_minor() > rules.monthly_budget_minor - spent.business_month_minor {
        return Err(NoReward::BudgetExhausted);
    }
    Ok(reward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settlement::config::Tier;

    fn rules() -> RewardRules {
        RewardRules::default()
    }

    #[test]
    fn tiers_pick_the_highest_reached() {
        let rules = rules();
        assert_eq!(tier_for(&rules, 39), None);
        assert_eq!(tier_for(&rules, 40), Some(200));
        assert_eq!(tier_for(&rules, 89), Some(500));
        assert_eq!(tier_for(&rules, 100), Some(1_000));
    }

    #[test]
    fn tiers_in_any_order_give_the_same_answer() {
        let mut rules = rules();
        rules.tiers.reverse();
        assert_eq!(tier_for(&rules, 95), Some(1_000));
        rules.tiers.push(Tier {
            min_score: 0,
            percent_bp: 50,
        });
        assert_eq!(tier_for(&rules, 10), Some(50));
    }

    #[test]
    fn shares_round_down_to_whole_ore() {
        // 5 % of 199.99 kr is 9.9995 kr: 999 öre, not 1 000.
        assert_eq!(share_rounded_down(19_999, 500), 999);
        assert_eq!(share_rounded_down(19_980, 500), 999);
        assert_eq!(share_rounded_down(1, 9_999), 0);
        assert_eq!(share_rounded_down(i64::MAX, 10_000), i64::MAX);
        assert_eq!(share_rounded_down(-500, 500), 0);
    }

    #[test]
    fn reward_is_the_tier_share_with_a_fee_rounded_down() {
        let reward = decide(&rules(), 14_950, "SEK", 75, Spent::default()).unwrap();
        // 5 % of 149.50 kr = 747.5 öre → 747; fee 10 % of 747 = 74.7 → 74.
        assert_eq!(reward.amount_minor, 747);
        assert_eq!(reward.fee_minor, 74);
        assert_eq!(reward.cost_minor(), 821);
    }

    #[test]
    fn per_reward_cap_applies() {
        let reward = decide(&rules(), 1_000_000, "SEK", 95, Spent::default()).unwrap();
        assert_eq!(reward.amount_minor, 5_000);
    }

    #[test]
    fn customer_caps_trim_the_reward_then_stop_it() {
        let spent = Spent {
            customer_day_minor: 9_800,
            ..Spent::default()
        };
        let reward = decide(&rules(), 100_000, "SEK", 95, spent).unwrap();
        assert_eq!(reward.amount_minor, 200);
        let spent = Spent {
            customer_day_minor: 10_000,
            ..Spent::default()
        };
        assert_eq!(
            decide(&rules(), 100_000, "SEK", 95, spent),
            Err(NoReward::CustomerCapReached)
        );
        let spent = Spent {
            customer_month_minor: 50_000,
            ..Spent::default()
        };
        assert_eq!(
            decide(&rules(), 100_000, "SEK", 95, spent),
            Err(NoReward::CustomerCapReached)
        );
    }

    #[test]
    fn budget_must_cover_reward_and_fee() {
        let mut rules = rules();
        rules.monthly_budget_minor = 5_499;
        // 5 000 reward + 500 fee = 5 500 > 5 499.
        assert_eq!(
            decide(&rules, 100_000, "SEK", 95, Spent::default()),
            Err(NoReward::BudgetExhausted)
        );
        rules.monthly_budget_minor = 5_500;
        assert!(decide(&rules, 100_000, "SEK", 95, Spent::default()).is_ok());
    }

    #[test]
    fn low_scores_tiny_purchases_and_other_currencies_earn_nothing() {
        let rules = rules();
        assert_eq!(
            decide(&rules, 10_000, "SEK", 10, Spent::default()),
            Err(NoReward::BelowTiers)
        );
        assert_eq!(
            decide(&rules, 49, "SEK", 45, Spent::default()),
            Err(NoReward::BelowTiers)
        );
        assert_eq!(
            decide(&rules, 10_000, "EUR", 95, Spent::default()),
            Err(NoReward::CurrencyNotRewarded)
        );
    }
}
