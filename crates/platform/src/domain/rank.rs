//! Rank keys: strings whose byte order is a list's order (a product backlog, a
//! product's use cases), so moving one item
//! rewrites one row (its key becomes a key strictly between its new neighbours').
//!
//! Keys use the digits `0-9A-Za-z` (ASCII order) and never end in `0`, which guarantees
//! there is always room between two distinct keys. Appending takes the next "integer"
//! (the first [`INTEGER_WIDTH`] digits plus one, followed by a middle digit), so a
//! backlog built by appends keeps 7-character keys; moves between neighbours add about
//! one digit per six moves into the same gap. When a key grows past [`MAX_KEY_LEN`] the
//! list is rebalanced ([`spread`]), an O(n) rewrite that repeated moves into
//! one spot make rare.

/// The digits, in ascending byte order.
const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE: usize = DIGITS.len();
/// Width of the integer part of appended keys.
pub const INTEGER_WIDTH: usize = 6;
/// Keys longer than this trigger a rebalance.
pub const MAX_KEY_LEN: usize = 48;

fn value(digit: u8) -> usize {
    DIGITS.iter().position(|d| *d == digit).unwrap_or(0)
}

/// A key strictly between `a` and `b` (`None` = before the first / after the last).
/// Requires `a < b` and neither ending in `0`.
pub fn between(a: Option<&str>, b: Option<&str>) -> String {
    match (a, b) {
        (None, None) => integer_key(BASE.pow(INTEGER_WIDTH as u32) / 2),
        (Some(a), None) => after(a),
        (a, Some(b)) => midpoint(a.unwrap_or("").as_bytes(), Some(b.as_bytes())),
    }
}

/// The key an item appended after `last` gets.
fn after(last: &str) -> String {
    let bytes = last.as_bytes();
    if bytes.len() >= INTEGER_WIDTH {
        let integer = bytes[..INTEGER_WIDTH]
            .iter()
            .fold(0usize, |n, d| n * BASE + value(*d));
        if integer + 1 < BASE.pow(INTEGER_WIDTH as u32) {
            return integer_key(integer + 1);
        }
    }
    midpoint(bytes, None)
}

/// `n` as an [`INTEGER_WIDTH`]-digit key followed by a middle digit (so it never ends in 0).
fn integer_key(mut n: usize) -> String {
    let mut digits = vec![b'0'; INTEGER_WIDTH];
    for slot in digits.iter_mut().rev() {
        *slot = DIGITS[n % BASE];
        n /= BASE;
    }
    digits.push(DIGITS[BASE / 2]);
    String::from_utf8(digits).unwrap_or_default()
}

/// The classic fractional midpoint of two digit strings (`b = None` is +infinity).
fn midpoint(a: &[u8], b: Option<&[u8]>) -> String {
    if let Some(b) = b {
        // Skip the common prefix (a missing digit of `a` counts as 0).
        let common = b
            .iter()
            .enumerate()
            .take_while(|(i, d)| a.get(*i).copied().unwrap_or(b'0') == **d)
            .count();
        if common > 0 {
            let rest = midpoint(a.get(common..).unwrap_or(&[]), Some(&b[common..]));
            return format!("{}{rest}", String::from_utf8_lossy(&b[..common]));
        }
    }
    let digit_a = a.first().map_or(0, |d| value(*d));
    let digit_b = b.and_then(|b| b.first()).map_or(BASE, |d| value(*d));
    if digit_b - digit_a > 1 {
        let middle = (digit_a + digit_b).div_ceil(2);
        return (DIGITS[middle] as char).to_string();
    }
    match b {
        // The first digits are adjacent: `b`'s first digit alone sorts between.
        Some(b) if b.len() > 1 => (b[0] as char).to_string(),
        _ => format!(
            "{}{}",
            DIGITS[digit_a] as char,
            midpoint(a.get(1..).unwrap_or(&[]), None)
        ),
    }
}

/// Fresh, evenly spaced keys for `count` items, in order (for rebalancing).
pub fn spread(count: usize) -> Vec<String> {
    let space = BASE.pow(INTEGER_WIDTH as u32);
    let step = (space / (count + 1)).max(1);
    (1..=count).map(|i| integer_key(i * step)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_between(a: Option<&str>, b: Option<&str>) -> String {
        let key = between(a, b);
        if let Some(a) = a {
            assert!(a < key.as_str(), "{a:?} < {key:?}");
        }
        if let Some(b) = b {
            assert!(key.as_str() < b, "{key:?} < {b:?}");
        }
        assert!(!key.ends_with('0'), "{key:?} ends in 0");
        key
    }

    #[test]
    fn appends_keep_short_keys() {
        let mut last = check_between(None, None);
        for _ in 0..10_000 {
            last = check_between(Some(&last), None);
            assert_eq!(last.len(), INTEGER_WIDTH + 1);
        }
    }

    #[test]
    fn repeated_inserts_into_one_gap_stay_ordered() {
        let low = between(None, None);
        let high = between(Some(&low), None);
        let mut upper = high.clone();
        for _ in 0..500 {
            upper = check_between(Some(&low), Some(&upper));
        }
        let mut lower = low.clone();
        for _ in 0..500 {
            lower = check_between(Some(&lower), Some(&high));
        }
        assert!(
            upper.len() > MAX_KEY_LEN,
            "growth is what triggers a rebalance"
        );
    }

    #[test]
    fn before_the_first_key() {
        let first = between(None, None);
        let mut key = first.clone();
        for _ in 0..200 {
            key = check_between(None, Some(&key));
        }
    }

    #[test]
    fn spread_is_ordered_and_even() {
        let keys = spread(100_000);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(keys.iter().all(|k| k.len() == INTEGER_WIDTH + 1));
    }

    #[test]
    fn random_moves_keep_a_total_order() {
        let mut keys: Vec<String> = spread(50);
        let mut seed = 7u64;
        for _ in 0..2_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let slot = (seed >> 33) as usize % (keys.len() + 1);
            let before = if slot == 0 {
                None
            } else {
                Some(keys[slot - 1].as_str())
            };
            let after = keys.get(slot).map(String::as_str);
            let key = check_between(before, after);
            keys.insert(slot, key);
        }
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
