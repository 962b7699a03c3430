//! Where load goes: a URL (`http://host:port/path?query`, `tcp://host:port`) or a bare
//! `host:port`, parsed with the `url` crate (WHATWG rules: IPv6 literals in brackets,
//! percent-encoding, default ports) and resolved with the system resolver, so host names
//! (`localhost`, a service's DNS name) work as well as IP literals.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use url::{Host, Position, Url};

/// A parsed and resolved target.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as given (normalised by the parser: `http://localhost:8080/`).
    pub url: String,
    /// `host[:port]` as the `Host` header / `:authority` carries it (the port only if the URL
    /// named one other than the scheme's default).
    pub authority: String,
    /// Path and query (`/` at least); `/` for `tcp://`.
    pub path: String,
    /// Resolved addresses, the one that accepted a connection first (see [`Endpoint::resolve`]).
    pub addrs: Vec<SocketAddr>,
}

/// Which schemes a command accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://` (HTTP/1.1, or h2c prior knowledge for the h2 command).
    Http,
    /// `tcp://` (or `http://`, whose host and port are used): the byte-level commands.
    Tcp,
}

/// Parses `s` for a command of kind `scheme`. A bare `host:port` (the form the scripts pass)
/// gets the command's scheme prefixed.
pub fn parse(s: &str, scheme: Scheme) -> Result<Url> {
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        match scheme {
            Scheme::Http => format!("http://{s}"),
            Scheme::Tcp => format!("tcp://{s}"),
        }
    };
    let url = Url::parse(&with_scheme).with_context(|| format!("invalid target {s:?}"))?;
    match (url.scheme(), scheme) {
        ("http", _) | ("tcp", Scheme::Tcp) => {}
        ("https", _) => bail!(
            "{s}: https is not supported (loadtest speaks plain HTTP/1.1 and h2c); use http://"
        ),
        (other, Scheme::Http) => bail!("{s}: unsupported scheme {other:?} (use http://)"),
        (other, Scheme::Tcp) => {
            bail!("{s}: unsupported scheme {other:?} (use tcp:// or host:port)")
        }
    }
    if url.host().is_none() {
        bail!("{s}: no host");
    }
    if url.port_or_known_default().is_none() {
        bail!("{s}: no port");
    }
    Ok(url)
}

/// Resolves a parsed URL. Of several addresses (`localhost` is often `::1` and `127.0.0.1`),
/// the first that accepts a TCP connection (one probe each, 1 s timeout) is put first, so a
/// connection per request does not pay a refused connect on every request.
pub fn resolve(url: &Url) -> Result<Endpoint> {
    let port = url.port_or_known_default().expect("checked in parse");
    let host = match url.host().expect("checked in parse") {
        Host::Domain(d) => d.to_string(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    };
    let mut addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect();
    if addrs.is_empty() {
        bail!("{host} resolved to no address");
    }
    if addrs.len() > 1 {
        if let Some(i) = addrs
            .iter()
            .position(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
        {
            let first = addrs.remove(i);
            addrs.insert(0, first);
        }
    }
    let host_str = url.host_str().expect("checked in parse");
    let authority = match url.port() {
        Some(p) => format!("{host_str}:{p}"),
        None => host_str.to_string(),
    };
    let path = match url.scheme() {
        "tcp" => "/".to_string(),
        _ => url[Position::BeforePath..Position::AfterQuery].to_string(),
    };
    Ok(Endpoint {
        url: url.to_string(),
        authority,
        path: if path.is_empty() { "/".into() } else { path },
        addrs,
    })
}

/// [`parse`] then [`resolve`].
pub fn endpoint(s: &str, scheme: Scheme) -> Result<Endpoint> {
    resolve(&parse(s, scheme)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_and_urls() {
        let e = endpoint("127.0.0.1:8080", Scheme::Http).unwrap();
        assert_eq!(e.url, "http://127.0.0.1:8080/");
        assert_eq!(e.authority, "127.0.0.1:8080");
        assert_eq!(e.path, "/");
        assert_eq!(e.addrs, ["127.0.0.1:8080".parse().unwrap()]);

        let e = endpoint("http://[::1]:9/a/b?x=1&y=%20#frag", Scheme::Http).unwrap();
        assert_eq!(e.authority, "[::1]:9");
        assert_eq!(e.path, "/a/b?x=1&y=%20");
        assert_eq!(e.addrs, ["[::1]:9".parse().unwrap()]);

        // The default port is not repeated in the Host header.
        let e = endpoint("http://127.0.0.1/", Scheme::Http).unwrap();
        assert_eq!(e.authority, "127.0.0.1");
        assert_eq!(e.addrs[0].port(), 80);

        let e = endpoint("tcp://127.0.0.1:25", Scheme::Tcp).unwrap();
        assert_eq!(e.addrs, ["127.0.0.1:25".parse().unwrap()]);
        let e = endpoint("127.0.0.1:25", Scheme::Tcp).unwrap();
        assert_eq!(e.addrs, ["127.0.0.1:25".parse().unwrap()]);
    }

    #[test]
    fn host_names_resolve() {
        let e = endpoint("http://localhost:1/", Scheme::Http).unwrap();
        assert!(e
            .addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 1));
        assert_eq!(e.authority, "localhost:1");
    }

    #[test]
    fn unsupported_targets_are_errors() {
        let err = |s, k| format!("{:#}", endpoint(s, k).unwrap_err());
        assert!(err("https://localhost:1/", Scheme::Http).contains("https is not supported"));
        assert!(err("tcp://localhost:1", Scheme::Http).contains("unsupported scheme"));
        assert!(err("tcp://localhost", Scheme::Tcp).contains("no port"));
        assert!(err("http://", Scheme::Http).contains("invalid target"));
    }
}
