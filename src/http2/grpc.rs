//! gRPC awareness for HTTP/2 streams: recognising a gRPC request, reading `grpc-status` (from
//! trailers, or from the headers of a trailers-only response), honouring `grpc-timeout` as the
//! upstream deadline, and the status codes of proxy-made gRPC errors.
//!
//! Not here: message framing (the proxy never looks inside gRPC messages).

use std::time::Duration;

use http::HeaderMap;

/// `DEADLINE_EXCEEDED`: the proxy's answer when the upstream missed the deadline.
pub const DEADLINE_EXCEEDED: u8 = 4;
/// `UNIMPLEMENTED`.
pub const UNIMPLEMENTED: u8 = 12;
/// `UNAVAILABLE`: the proxy's answer when the upstream cannot be reached.
pub const UNAVAILABLE: u8 = 14;

/// Whether the request is gRPC (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `grpc-status` as a number (0–16 in practice; anything that does not fit a byte is None).
pub fn status(headers: &HeaderMap) -> Option<u8> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `grpc-timeout` (`1*8DIGIT unit`, units H M S m u n) as a duration.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status a proxy-made error carries, from the HTTP status it stands for.
pub fn status_for(http_code: u16) -> u8 {
    match http_code {
        504 => DEADLINE_EXCEEDED,
        501 => UNIMPLEMENTED,
        _ => UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &'static str, v: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, http::HeaderValue::from_static(v));
        m
    }

    #[test]
    fn recognises_grpc_content_types() {
        assert!(is_grpc(&h("content-type", "application/grpc")));
        assert!(is_grpc(&h("content-type", "application/grpc+proto")));
        assert!(!is_grpc(&h("content-type", "application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn parses_grpc_status() {
        assert_eq!(status(&h("grpc-status", "0")), Some(0));
        assert_eq!(status(&h("grpc-status", "14")), Some(14));
        assert_eq!(status(&h("grpc-status", "x")), None);
        assert_eq!(status(&h("grpc-status", "300")), None);
        assert_eq!(status(&HeaderMap::new()), None);
    }

    #[test]
    fn parses_grpc_timeout_units() {
        assert_eq!(
            timeout(&h("grpc-timeout", "2H")),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            timeout(&h("grpc-timeout", "3M")),
            Some(Duration::from_secs(180))
        );
        assert_eq!(
            timeout(&h("grpc-timeout", "5S")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            timeout(&h("grpc-timeout", "250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            timeout(&h("grpc-timeout", "7u")),
            Some(Duration::from_micros(7))
        );
        assert_eq!(
            timeout(&h("grpc-timeout", "9n")),
            Some(Duration::from_nanos(9))
        );
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            let mut m = HeaderMap::new();
            m.insert("grpc-timeout", http::HeaderValue::from_str(bad).unwrap());
            assert_eq!(timeout(&m), None, "{bad:?}");
        }
    }
}
