//! The caller's deadline, as the `grpc-timeout` header carries it, for handlers that
//! wait (and must answer DEADLINE_EXCEEDED themselves, naming what they waited for,
//! before tonic cuts the call off with a generic one).

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// The time the caller gave the call, if it set a deadline.
pub fn caller_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (amount, unit) = value.split_at(value.len() - 1);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_read_in_every_unit() {
        let with = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            caller_timeout(&metadata)
        };
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("7x"), None);
        assert_eq!(with("S"), None);
        assert_eq!(caller_timeout(&MetadataMap::new()), None);
    }
}
