//! Opaque page tokens. A token wraps the sort key of the last row returned (keyset
//! paging, so a page costs the same however deep it is) and is hex-encoded so clients
//! treat it as opaque.

use crate::domain::error::{AppError, AppResult};

/// Encodes the last row's sort key as a `next_page_token`.
pub fn encode_token(last_key: &str) -> String {
    hex::encode(format!("k1:{last_key}"))
}

/// Decodes a `page_token`; empty means the first page (`None`).
pub fn decode_token(field: &str, token: &str) -> AppResult<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = hex::decode(token).map_err(|_| AppError::invalid(field, "malformed page token"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| AppError::invalid(field, "malformed page token"))?;
    // Keys are ids, rank keys, numbers and dates: a control character (PostgreSQL refuses
    // NUL in text) means the token was not ours, and it never reaches SQL.
    if text.chars().any(char::is_control) {
        return Err(AppError::invalid(field, "malformed page token"));
    }
    text.strip_prefix("k1:")
        .map(|key| Some(key.to_owned()))
        .ok_or_else(|| AppError::invalid(field, "malformed page token"))
}

/// Decodes a token whose key is two parts `a|b` (e.g. a sort value and an id).
pub fn decode_pair(field: &str, token: &str) -> AppResult<Option<(String, String)>> {
    match decode_token(field, token)? {
        None => Ok(None),
        Some(key) => key
            .split_once('|')
            .map(|(a, b)| Some((a.to_owned(), b.to_owned())))
            .ok_or_else(|| AppError::invalid(field, "malformed page token")),
    }
}

/// Cuts an over-fetched page (`page_size + 1` rows were asked for) to `page_size` and
/// returns it with the `next_page_token` (`key` of its last row), or an empty token when
/// this is the last page.
pub fn finish_page<T>(
    mut rows: Vec<T>,
    page_size: u32,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    if rows.len() > page_size as usize {
        rows.truncate(page_size as usize);
        let token = rows
            .last()
            .map(|last| encode_token(&key(last)))
            .unwrap_or_default();
        (rows, token)
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        assert_eq!(
            decode_token("page_token", &encode_token("a|b"))
                .unwrap()
                .as_deref(),
            Some("a|b")
        );
        assert_eq!(decode_token("page_token", "").unwrap(), None);
        assert!(decode_token("page_token", "zz").is_err());
        assert!(decode_token("page_token", &hex::encode("other")).is_err());
        // A NUL byte once reached PostgreSQL and came back INTERNAL.
        assert!(decode_token("page_token", &hex::encode("k1:a\0b")).is_err());
    }

    #[test]
    fn pages_are_cut_and_pairs_decoded() {
        let (page, token) = finish_page(vec![1, 2, 3], 2, |n| format!("{n}|x"));
        assert_eq!(page, vec![1, 2]);
        assert_eq!(
            decode_pair("page_token", &token).unwrap(),
            Some(("2".into(), "x".into()))
        );
        assert_eq!(finish_page(vec![1, 2], 2, |n: &i32| n.to_string()).1, "");
        assert!(decode_pair("page_token", &encode_token("no-separator")).is_err());
    }
}
