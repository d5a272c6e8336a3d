//! Opaque page tokens. A token wraps the sort key of the last row returned (keyset
//! paging, so a page costs the same however deep it is) and is hex-encoded so clients
//! treat it as opaque.

use crate::error::{AppError, AppResult};

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
    text.strip_prefix("k1:")
        .map(|key| Some(key.to_owned()))
        .ok_or_else(|| AppError::invalid(field, "malformed page token"))
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
    }
}
