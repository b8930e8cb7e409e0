//! Generates realistic Swedish purchases for the sandbox to play.
//!
//! Each demo integration's `business_id` hints at the kind of shop (café,
//! bicycle workshop, design shop, bakery, ice-cream bar, clothing, farm
//! shop); its purchases draw one to five distinct items from that shop's
//! catalog, with SEK prices and whole quantities whose totals add up exactly
//! to the purchase amount in öre. Generation is deterministic for a seeded
//! rng, so a failing simulation can be replayed with the same seed.

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::canonical::{LineItem, PaymentState};
use crate::config::IntegrationConfig;
use crate::providers::{self, ProviderKind};
use crate::sandbox::Purchase;

/// Line items per purchase, inclusive.
const MIN_ITEMS: usize = 1;
const MAX_ITEMS: usize = 5;
/// How long before `now` a purchase was rung up, inclusive.
const MIN_AGE_SECS: i64 = 5;
const MAX_AGE_SECS: i64 = 90;
/// How long after creation a purchase completed, inclusive; less than
/// `MIN_AGE_SECS` so it completed before `now`.
const MAX_COMPLETION_SECS: i64 = 4;
const CURRENCY: &str = "SEK";

/// One thing a shop sells.
struct Item {
    name: &'static str,
    sku: &'static str,
    price_ore: i64,
    /// Most of it one customer buys at once.
    max_quantity: u32,
}

const fn item(name: &'static str, sku: &'static str, price_ore: i64, max_quantity: u32) -> Item {
    Item {
        name,
        sku,
        price_ore,
        max_quantity,
    }
}

const CAFE: &[Item] = &[
    item("Kanelbulle", "KAF-001", 3800, 4),
    item("Kardemummabulle", "KAF-002", 4200, 4),
    item("Cappuccino", "KAF-010", 4900, 3),
    item("Bryggkaffe", "KAF-011", 3500, 3),
    item("Havrelatte", "KAF-012", 5400, 2),
    item("Semla", "KAF-020", 5900, 2),
    item("Prinsesstårta, bit", "KAF-021", 6500, 2),
    item("Räksmörgås", "KAF-030", 12900, 2),
    item("Chokladboll", "KAF-022", 2800, 5),
];

const BICYCLE_WORKSHOP: &[Item] = &[
    item("Däckbyte", "CYK-100", 34900, 2),
    item("Slang 28\"", "CYK-110", 12900, 2),
    item("Service bas", "CYK-200", 69500, 1),
    item("Bromsjustering", "CYK-210", 24900, 1),
    item("Växeljustering", "CYK-211", 29900, 1),
    item("Kedja", "CYK-120", 29900, 1),
    item("Lampset LED", "CYK-130", 39900, 1),
    item("Ringklocka", "CYK-131", 9900, 2),
];

const DESIGN_SHOP: &[Item] = &[
    item("Vas i munblåst glas", "DES-01", 89500, 1),
    item("Kökshandduk i lin", "DES-02", 19900, 4),
    item("Ljusstake mässing", "DES-03", 64900, 2),
    item("Dalahäst, liten", "DES-04", 29900, 3),
    item("Kuddfodral ull", "DES-05", 49900, 2),
    item("Poster 50×70", "DES-06", 34900, 2),
    item("Smörkniv i ek", "DES-07", 12900, 4),
    item("Keramikmugg", "DES-08", 27900, 4),
];

const BAKERY: &[Item] = &[
    item("Kanelbulle", "BAG-01", 3500, 6),
    item("Kardemummabulle", "BAG-02", 3900, 6),
    item("Surdegsbröd", "BAG-10", 6900, 2),
    item("Semla", "BAG-03", 5500, 4),
    item("Vetelängd", "BAG-11", 8900, 1),
    item("Lussekatt", "BAG-04", 2900, 6),
    item("Mazarin", "BAG-05", 3200, 4),
    item("Knäckebröd", "BAG-12", 4900, 2),
];

const ICE_CREAM_BAR: &[Item] = &[
    item("Lakritsglass", "GLS-01", 4500, 3),
    item("Två kulor", "GLS-02", 5500, 4),
    item("Tre kulor", "GLS-03", 6900, 3),
    item("Mjukglass i strut", "GLS-04", 3900, 4),
    item("Glasspinne", "GLS-05", 2500, 5),
    item("Hallonsorbet", "GLS-06", 4500, 3),
    item("Våffla med grädde", "GLS-07", 6500, 2),
    item("Mineralvatten", "GLS-20", 2500, 4),
];

const CLOTHING: &[Item] = &[
    item("T-shirt, ekologisk bomull", "KLD-100", 29900, 3),
    item("Jeans", "KLD-110", 89900, 1),
    item("Ullstrumpor", "KLD-120", 14900, 4),
    item("Mössa", "KLD-130", 24900, 2),
    item("Regnjacka", "KLD-140", 149900, 1),
    item("Klackning", "KLD-900", 24900, 2),
    item("Skosnören", "KLD-910", 4900, 3),
    item("Skokräm", "KLD-911", 9900, 2),
];

const FARM_SHOP: &[Item] = &[
    item("Ägg, 12-pack", "GRD-01", 5900, 3),
    item("Potatis, 2 kg", "GRD-02", 4500, 2),
    item("Honung, 350 g", "GRD-03", 8900, 2),
    item("Kallpressad rapsolja", "GRD-04", 7900, 2),
    item("Lammfärs, 500 g", "GRD-05", 11900, 2),
    item("Äppelmust", "GRD-06", 6900, 4),
    item("Getost", "GRD-07", 8900, 2),
    item("Rabarbersylt", "GRD-08", 5900, 3),
];

/// The catalog a business sells from, guessed from its id.
fn catalog(business_id: &str) -> &'static [Item] {
    let id = business_id.to_lowercase();
    let hints: [(&[&str], &'static [Item]); 7] = [
        (&["cykel", "bike", "cycle"], BICYCLE_WORKSHOP),
        (&["design", "inred"], DESIGN_SHOP),
        (&["bager", "kanel", "bakery"], BAKERY),
        (&["glass", "ice"], ICE_CREAM_BAR),
        (&["klack", "kläd", "klad", "mode", "cloth"], CLOTHING),
        (&["gård", "gard", "farm"], FARM_SHOP),
        (&["kafe", "kafé", "cafe", "kaffe", "fika"], CAFE),
    ];
    hints
        .into_iter()
        .find(|(words, _)| words.iter().any(|word| id.contains(word)))
        .map_or(CAFE, |(_, items)| items)
}

/// A completed purchase at the integration's shop, rung up a little before
/// `now`.
pub fn purchase(
    rng: &mut impl Rng,
    integration: &IntegrationConfig,
    now: DateTime<Utc>,
) -> Purchase {
    let transaction_ref = transaction_ref(rng, integration.provider);
    let line_items = line_items(rng, catalog(&integration.business_id));
    let amount_minor = line_items.iter().filter_map(|item| item.total_minor).sum();

    // Whole seconds: several providers (Stripe's `created`) carry no more.
    let age = TimeDelta::seconds(rng.gen_range(MIN_AGE_SECS..=MAX_AGE_SECS));
    let created_at = truncate_to_seconds(now - age);
    let updated_at = created_at + TimeDelta::seconds(rng.gen_range(1..=MAX_COMPLETION_SECS));

    Purchase {
        provider: integration.provider,
        integration_id: integration.id.clone(),
        transaction_ref,
        amount_minor,
        currency: CURRENCY.to_string(),
        state: PaymentState::Completed,
        created_at,
        updated_at,
        location_ref: location_ref(integration),
        line_items,
    }
}

fn line_items(rng: &mut impl Rng, catalog: &[Item]) -> Vec<LineItem> {
    let count = rng.gen_range(MIN_ITEMS..=MAX_ITEMS.min(catalog.len()));
    catalog
        .choose_multiple(rng, count)
        .map(|item| {
            let quantity = rng.gen_range(1..=item.max_quantity);
            LineItem {
                name: item.name.to_string(),
                quantity: quantity.to_string(),
                unit_price_minor: Some(item.price_ore),
                total_minor: Some(item.price_ore * i64::from(quantity)),
                sku: Some(item.sku.to_string()),
            }
        })
        .collect()
}

/// A transaction id in the provider's own format.
pub fn transaction_ref(rng: &mut impl Rng, provider: ProviderKind) -> String {
    match provider {
        ProviderKind::Square => providers::square::sandbox::transaction_ref(rng),
        ProviderKind::Stripe => providers::stripe::sandbox::transaction_ref(rng),
        ProviderKind::Shopify => providers::shopify::sandbox::transaction_ref(rng),
        ProviderKind::Zettle => providers::zettle::sandbox::transaction_ref(rng),
        ProviderKind::Swish => providers::swish::sandbox::transaction_ref(rng),
        ProviderKind::Klarna => providers::klarna::sandbox::transaction_ref(rng),
        ProviderKind::Generic => providers::generic::sandbox::transaction_ref(rng),
    }
}

/// The till's location id in the provider's style. It is derived from the
/// integration id alone, so every purchase of one integration shares it.
pub fn location_ref(integration: &IntegrationConfig) -> String {
    let mut rng = StdRng::seed_from_u64(fnv1a(integration.id.as_bytes()));
    let mut pick = |alphabet: &[u8], len: usize| -> String {
        (0..len)
            .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
            .collect()
    };
    const UPPER_ALNUM: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const DIGITS: &[u8] = b"0123456789";
    const HEX: &[u8] = b"0123456789abcdef";
    match integration.provider {
        ProviderKind::Square => format!("L{}", pick(UPPER_ALNUM, 12)),
        ProviderKind::Stripe => format!("tml_{}", pick(ALNUM, 24)),
        ProviderKind::Shopify => format!("6{}", pick(DIGITS, 10)),
        ProviderKind::Zettle => {
            let hex = pick(HEX, 32);
            format!(
                "{}-{}-4{}-a{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..]
            )
        }
        ProviderKind::Swish => format!("123{}", pick(DIGITS, 7)),
        ProviderKind::Klarna => format!("K{}", pick(DIGITS, 6)),
        ProviderKind::Generic => format!("store-{}", pick(DIGITS, 4)),
    }
}

fn truncate_to_seconds(instant: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(instant.timestamp(), 0).unwrap_or(instant)
}

/// FNV-1a: a hash that stays the same across Rust releases, unlike std's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn demo_integrations() -> Vec<IntegrationConfig> {
        let text = std::fs::read_to_string("config/kvitto.toml").unwrap();
        Config::from_toml(&text).unwrap().integrations
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-06T12:30:45.678Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn same_seed_generates_the_same_purchases() {
        let integrations = demo_integrations();
        let generate_all = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            integrations
                .iter()
                .cycle()
                .take(40)
                .map(|i| purchase(&mut rng, i, now()))
                .collect::<Vec<_>>()
        };
        assert_eq!(generate_all(42), generate_all(42));
        assert_ne!(generate_all(42), generate_all(43));
    }

    #[test]
    fn line_items_add_up_to_the_amount() {
        let mut rng = StdRng::seed_from_u64(7);
        for integration in demo_integrations().iter().cycle().take(700) {
            let purchase = purchase(&mut rng, integration, now());
            assert!((MIN_ITEMS..=MAX_ITEMS).contains(&purchase.line_items.len()));
            let mut total = 0;
            for item in &purchase.line_items {
                let quantity: i64 = item.quantity.parse().unwrap();
                assert!(quantity >= 1);
                assert_eq!(
                    item.total_minor,
                    Some(item.unit_price_minor.unwrap() * quantity)
                );
                total += item.total_minor.unwrap();
            }
            assert_eq!(purchase.amount_minor, total);
            assert!(purchase.amount_minor > 0);
            let names: std::collections::HashSet<_> =
                purchase.line_items.iter().map(|i| &i.name).collect();
            assert_eq!(names.len(), purchase.line_items.len(), "items repeat");
        }
    }

    #[test]
    fn purchases_are_completed_whole_seconds_a_little_before_now() {
        let mut rng = StdRng::seed_from_u64(1);
        for integration in demo_integrations() {
            let purchase = purchase(&mut rng, &integration, now());
            assert_eq!(purchase.state, PaymentState::Completed);
            assert_eq!(purchase.currency, "SEK");
            assert_eq!(
                (purchase.provider, purchase.integration_id.as_str()),
                (integration.provider, integration.id.as_str())
            );
            assert_eq!(purchase.created_at.timestamp_subsec_nanos(), 0);
            assert!(purchase.created_at < purchase.updated_at && purchase.updated_at < now());
            assert!(now() - purchase.created_at <= TimeDelta::seconds(MAX_AGE_SECS + 1));
        }
    }

    #[test]
    fn business_ids_pick_their_shop() {
        let first_items =
            |business: &str| catalog(business).iter().map(|i| i.name).collect::<Vec<_>>();
        assert!(first_items("kafe-linnea").contains(&"Cappuccino"));
        assert!(first_items("cykelverkstan").contains(&"Däckbyte"));
        assert!(first_items("designbutiken").contains(&"Keramikmugg"));
        assert!(first_items("bageriet-kanelen").contains(&"Kardemummabulle"));
        assert!(first_items("glassbaren").contains(&"Lakritsglass"));
        assert!(first_items("klackbaren").contains(&"Klackning"));
        assert!(first_items("gardsbutiken").contains(&"Äppelmust"));
        assert!(first_items("okänd-butik").contains(&"Kanelbulle"));
    }

    #[test]
    fn location_refs_are_stable_per_integration_and_provider_styled() {
        let integrations = demo_integrations();
        for integration in &integrations {
            assert_eq!(location_ref(integration), location_ref(integration));
        }
        let by_provider = |kind| {
            let integration = integrations.iter().find(|i| i.provider == kind).unwrap();
            location_ref(integration)
        };
        let square = by_provider(ProviderKind::Square);
        assert!(square.starts_with('L') && square.len() == 13, "{square}");
        assert!(by_provider(ProviderKind::Stripe).starts_with("tml_"));
        assert!(by_provider(ProviderKind::Shopify).parse::<u64>().is_ok());
        assert!(uuid::Uuid::parse_str(&by_provider(ProviderKind::Zettle)).is_ok());
        assert!(by_provider(ProviderKind::Generic).starts_with("store-"));
    }

    #[test]
    fn generic_purchases_carry_generic_transaction_refs() {
        let integration = demo_integrations()
            .into_iter()
            .find(|i| i.provider == ProviderKind::Generic)
            .unwrap();
        let purchase = purchase(&mut StdRng::seed_from_u64(5), &integration, now());
        assert!(
            purchase.transaction_ref.starts_with("txn_"),
            "{}",
            purchase.transaction_ref
        );
    }
}
