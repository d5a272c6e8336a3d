//! Opaque page tokens. A token wraps the sort key of the last row returned (keyset
//! paging, so a page costs the same however deep it is) and is hex-encoded so clients
//! treat it as opaque.
//!
//! A token is bound to the query it came from (AIP-158): the RPC, the caller's tenant and
//! every request field that decides which rows come in which order (parent, ordering,
//! filters; not the page size). A token passed with another query, or older than
//! [`TOKEN_LIFETIME_SECS`], is refused with INVALID_ARGUMENT. Tokens are not signed: they
//! carry no authority (every page is read within the caller's tenant), so a client that
//! forges one only moves its own cursor.

use sha2::{Digest as _, Sha256};

use crate::domain::error::{AppError, AppResult};
use crate::domain::time::now_micros;

/// How long a page token is accepted after the page that returned it.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

/// What a page token is bound to: a fingerprint of the RPC and the request fields that
/// decide the rows and their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    fingerprint: [u8; 8],
}

impl PageQuery {
    /// The query of `rpc` (its full method name) with `parts` (tenant, parent, ordering,
    /// filters, each in a canonical form).
    pub fn new(rpc: &str, parts: &[&str]) -> PageQuery {
        let mut hash = Sha256::new();
        hash.update(rpc.as_bytes());
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let mut fingerprint = [0; 8];
        fingerprint.copy_from_slice(&digest[..8]);
        PageQuery { fingerprint }
    }
}

/// Encodes the last row's sort key as a `next_page_token` of `query`.
pub fn encode_token(query: &PageQuery, last_key: &str) -> String {
    encode_at(query, last_key, now_micros() / 1_000_000)
}

fn encode_at(query: &PageQuery, last_key: &str, issued_secs: i64) -> String {
    hex::encode(format!(
        "k2:{issued_secs}:{}:{last_key}",
        hex::encode(query.fingerprint)
    ))
}

/// Decodes a `page_token` of `query`; empty means the first page (`None`).
pub fn decode_token(field: &str, token: &str, query: &PageQuery) -> AppResult<Option<String>> {
    decode_at(field, token, query, now_micros() / 1_000_000)
}

fn decode_at(
    field: &str,
    token: &str,
    query: &PageQuery,
    now_secs: i64,
) -> AppResult<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || AppError::invalid(field, "malformed page token");
    let bytes = hex::decode(token).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    // Keys are ids, rank keys, numbers and dates: a control character (PostgreSQL refuses
    // NUL in text) means the token was not ours, and it never reaches SQL.
    if text.chars().any(char::is_control) {
        return Err(malformed());
    }
    let Some(rest) = text.strip_prefix("k2:") else {
        return Err(if text.starts_with("k1:") {
            AppError::invalid(
                field,
                "a page token from an earlier version; start from the first page",
            )
        } else {
            malformed()
        });
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(issued), Some(fingerprint), Some(key)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let issued: i64 = issued.parse().map_err(|_| malformed())?;
    if fingerprint != hex::encode(query.fingerprint) {
        return Err(AppError::invalid(
            field,
            "the token belongs to another query: pass it with the same method and the same \
             parent, ordering and filters as the call that returned it, or start from the \
             first page",
        ));
    }
    if now_secs.saturating_sub(issued) > TOKEN_LIFETIME_SECS {
        return Err(AppError::invalid(
            field,
            format!(
                "the token has expired (tokens last {} minutes); start from the first page",
                TOKEN_LIFETIME_SECS / 60
            ),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Decodes a token of `query` whose key is two parts `a|b` (e.g. a sort value and an id).
pub fn decode_pair(
    field: &str,
    token: &str,
    query: &PageQuery,
) -> AppResult<Option<(String, String)>> {
    match decode_token(field, token, query)? {
        None => Ok(None),
        Some(key) => key
            .split_once('|')
            .map(|(a, b)| Some((a.to_owned(), b.to_owned())))
            .ok_or_else(|| AppError::invalid(field, "malformed page token")),
    }
}

/// Decodes a token of `query` whose key is a number and a text `n|t` (a sort value such
/// as a time or a score, then an id or rank key that breaks ties).
pub fn decode_numbered<N: std::str::FromStr>(
    field: &str,
    token: &str,
    query: &PageQuery,
) -> AppResult<Option<(N, String)>> {
    match decode_pair(field, token, query)? {
        None => Ok(None),
        Some((number, text)) => number
            .parse()
            .map(|number| Some((number, text)))
            .map_err(|_| AppError::invalid(field, "malformed page token")),
    }
}

/// Cuts an over-fetched page (`page_size + 1` rows were asked for) to `page_size` and
/// returns it with the `next_page_token` of `query` (`key` of its last row), or an empty
/// token when this is the last page.
pub fn finish_page<T>(
    mut rows: Vec<T>,
    page_size: u32,
    query: &PageQuery,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    if rows.len() > page_size as usize {
        rows.truncate(page_size as usize);
        let token = rows
            .last()
            .map(|last| encode_token(query, &key(last)))
            .unwrap_or_default();
        (rows, token)
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> PageQuery {
        PageQuery::new("agilepm.x.v1.X/List", &["acme", "parent"])
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let q = query();
        assert_eq!(
            decode_token("page_token", &encode_token(&q, "a|b"), &q)
                .unwrap()
                .as_deref(),
            Some("a|b")
        );
        assert_eq!(decode_token("page_token", "", &q).unwrap(), None);
        assert!(decode_token("page_token", "zz", &q).is_err());
        assert!(decode_token("page_token", &hex::encode("other"), &q).is_err());
        assert!(decode_token("page_token", &hex::encode("k1:a|b"), &q).is_err());
        // A NUL byte once reached PostgreSQL and came back INTERNAL.
        let nul = hex::encode(format!("k2:1:{}:a\0b", hex::encode(q.fingerprint)));
        assert!(decode_token("page_token", &nul, &q).is_err());
    }

    #[test]
    fn tokens_are_bound_to_their_query() {
        let token = encode_token(&query(), "k");
        for other in [
            PageQuery::new("agilepm.x.v1.X/Other", &["acme", "parent"]),
            PageQuery::new("agilepm.x.v1.X/List", &["globex", "parent"]),
            PageQuery::new("agilepm.x.v1.X/List", &["acme", "other"]),
            PageQuery::new("agilepm.x.v1.X/List", &["acmepa", "rent"]),
        ] {
            let error = decode_token("page_token", &token, &other).unwrap_err();
            assert!(error.to_string().contains("another query"), "{error}");
        }
    }

    #[test]
    fn tokens_expire() {
        let q = query();
        let issued = 1_000_000;
        let token = encode_at(&q, "k", issued);
        let at = |now| decode_at("page_token", &token, &q, now);
        assert!(at(issued + TOKEN_LIFETIME_SECS).is_ok());
        let error = at(issued + TOKEN_LIFETIME_SECS + 1).unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
    }

    #[test]
    fn pages_are_cut_and_pairs_decoded() {
        let q = query();
        let (page, token) = finish_page(vec![1, 2, 3], 2, &q, |n| format!("{n}|x"));
        assert_eq!(page, vec![1, 2]);
        assert_eq!(
            decode_pair("page_token", &token, &q).unwrap(),
            Some(("2".into(), "x".into()))
        );
        assert_eq!(
            finish_page(vec![1, 2], 2, &q, |n: &i32| n.to_string()).1,
            ""
        );
        let no_separator = encode_token(&q, "no-separator");
        assert!(decode_pair("page_token", &no_separator, &q).is_err());
        let numbered = encode_token(&q, "-12|id");
        assert_eq!(
            decode_numbered::<i64>("page_token", &numbered, &q).unwrap(),
            Some((-12, "id".into()))
        );
        let not_a_number = encode_token(&q, "x|id");
        assert!(decode_numbered::<f64>("page_token", &not_a_number, &q).is_err());
    }
}
