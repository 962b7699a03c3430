//! The request checks the proxy makes itself before a stream goes upstream, beyond RFC 9113
//! §8's (which the codec, `h2wire::server`, enforces: pseudo-header and connection-specific
//! fields, names, values, trailers; tests/h2_conformance.rs covers each): an HTTP/2 request's
//! target and authority meet the HTTP/1.1 proxy's rules ([`bad_target`]), and its authority
//! may come from Host ([`fill_authority`]).

use http::request::Parts;
use http::uri::{Authority, Scheme, Uri};

use crate::http1::head::{check_target, valid_host, TargetForm};

/// Why a request's target or authority is malformed, if it is: the rules an HTTP/1.1
/// request meets in [`check_target`] and [`valid_host`], so a request is refused or forwarded
/// the same whichever protocol the client spoke (an HTTP/2 request goes upstream as HTTP/1.1
/// on h2→h1).
///
/// - `:path` (RFC 9113 §8.3.1): origin-form, or `*` for OPTIONS, with only RFC 3986
///   characters (no `"`, `{`, non-ASCII, `%` without two hex digits). `h2` takes anything
///   `http`'s parser takes: `?a`, `*` with any method, `/a"b`.
/// - `:authority`: a valid `host[:port]` without userinfo (RFC 9113 §8.3.1 MUST NOT).
/// - Host: at most one field, each a valid `host[:port]` (RFC 9112 §3.2 for the HTTP/1.1
///   request it may become).
///
/// CONNECT (no `:path`) is not checked here: the proxy answers it 501.
pub fn bad_target(parts: &Parts) -> Option<&'static str> {
    if let Some(pq) = parts.uri.path_and_query() {
        match check_target(parts.method.as_str(), pq.as_str()) {
            Ok(t) if matches!(t.form, TargetForm::Origin | TargetForm::Asterisk) => {}
            Ok(_) => return Some(":path not origin-form or * (RFC 9113 §8.3.1)"),
            Err(e) => return Some(e.reason()),
        }
    }
    if let Some(a) = parts.uri.authority() {
        if a.as_str().contains('@') || !valid_host(a.as_str().as_bytes(), false) {
            return Some("invalid :authority (RFC 9113 §8.3.1)");
        }
    }
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    if let Some(h) = hosts.next() {
        if hosts.next().is_some() {
            return Some("more than one Host");
        }
        if !valid_host(h.as_bytes(), false) {
            return Some("invalid Host");
        }
    }
    None
}

/// Gives a request that came without `:authority` the authority of its Host field (RFC 9113
/// §8.3.1: a request may carry its authority in Host instead; an intermediary that forwards it
/// over HTTP/2 MUST construct `:authority` from it, and RFC 9110 §7.2 makes Host that
/// information). The scheme is `http`: the client spoke cleartext HTTP/2. Returns false when
/// the request has neither (or a Host that is not an authority): the proxy answers 400, as
/// for an HTTP/1.1 request without Host.
pub fn fill_authority(parts: &mut Parts) -> bool {
    if parts.uri.authority().is_some() {
        return true;
    }
    let Some(host) = parts.headers.get(http::header::HOST) else {
        return false;
    };
    let Ok(authority) = Authority::try_from(host.as_bytes()) else {
        return false;
    };
    // RFC 9110 §4.2.1: no userinfo in an http URI's authority.
    if authority.as_str().contains('@') {
        return false;
    }
    let mut u = std::mem::take(&mut parts.uri).into_parts();
    u.scheme = Some(Scheme::HTTP);
    u.authority = Some(authority);
    if u.path_and_query.is_none() {
        u.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    match Uri::from_parts(u) {
        Ok(uri) => {
            parts.uri = uri;
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_target_meets_the_http1_rules_rfc9113_8_3_1() {
        for (method, path, bad) in [
            ("GET", "/a?b", false),
            ("GET", "/a%20b", false),
            ("OPTIONS", "*", false),
            ("GET", "*", true),
            ("GET", "?a", true),
            ("GET", "/a\"b", true),
            ("GET", "/a{b}", true),
            ("GET", "/a%zz", true),
            ("GET", "/caf\u{e9}", true),
        ] {
            let mut p = parts("/", None);
            p.method = http::Method::from_bytes(method.as_bytes()).unwrap();
            let mut u = p.uri.clone().into_parts();
            u.path_and_query = Some(http::uri::PathAndQuery::from_maybe_shared(path).unwrap());
            p.uri = http::Uri::from_parts(u).unwrap();
            assert_eq!(bad_target(&p).is_some(), bad, "{method} {path}");
        }
        // What `h2` refuses before the proxy sees it (its target parser).
        for path in ["http://other/admin", "admin"] {
            assert!(
                http::uri::PathAndQuery::from_maybe_shared(path).is_err(),
                "{path}"
            );
        }
    }

    #[test]
    fn an_authority_or_host_meets_the_http1_rules() {
        assert!(bad_target(&parts("http://example.com:8080/", None)).is_none());
        assert!(bad_target(&parts("http://user@evil:80/", None)).is_some());
        assert!(bad_target(&parts("/", Some("a.example"))).is_none());
        assert!(bad_target(&parts("/", Some("a b"))).is_some());
        let mut p = parts("/", Some("a.example"));
        p.headers
            .append("host", http::HeaderValue::from_static("b.example"));
        assert_eq!(bad_target(&p), Some("more than one Host"));
    }

    #[test]
    fn host_gives_the_authority_rfc9113_8_3_1() {
        let mut p = parts("/a?b", Some("example.com:8080"));
        assert!(fill_authority(&mut p));
        assert_eq!(p.uri, "http://example.com:8080/a?b");

        let mut p = parts("http://given/x", Some("other"));
        assert!(fill_authority(&mut p));
        assert_eq!(p.uri, "http://given/x");

        for host in [None, Some("user@example.com"), Some("exa mple")] {
            let mut p = parts("/", host);
            assert!(!fill_authority(&mut p), "{host:?}");
        }
    }
}
