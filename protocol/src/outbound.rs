//! `--allow-outbound` patterns: which hosts a function may send HTTP
//! requests to. The grammar is Spin's `allowed_outbound_hosts`:
//!
//! ```text
//! SCHEME://HOST[:PORT]
//! SCHEME  http | https | *
//! HOST    name (exact) | *.name (any subdomain, not name itself) | *
//!         | IP address | CIDR network (10.0.0.0/8, [fd00::/8])
//! PORT    number | a..b (inclusive) | * ; absent: the scheme's default,
//!         so a `*` scheme must name its port
//! ```
//!
//! No path, query, user or fragment. Functions are reached by name under
//! `tern.internal` (`http://NAME.tern.internal`), and only a pattern that
//! names that domain grants it: `*` means the internet, not other functions.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// The domain functions are called under: `http://NAME.tern.internal`.
pub const INTERNAL_DOMAIN: &str = "tern.internal";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPattern {
    text: String,
    scheme: SchemeMatch,
    host: HostMatch,
    /// Inclusive range; `*` is `0..=65535`.
    ports: (u16, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeMatch {
    Http,
    Https,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    /// A host name, lowercase.
    Exact(String),
    /// Subdomains of this name (lowercase), not the name itself.
    Subdomains(String),
    Net(IpNet),
}

impl fmt::Display for OutboundPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl OutboundPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("--allow-outbound {text:?}: {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad("name a scheme: http://, https:// or *://");
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemeMatch::Http,
            "https" => SchemeMatch::Https,
            "*" => SchemeMatch::Any,
            _ => return bad("the scheme must be http, https or *"),
        };
        if rest.is_empty() {
            return bad("name a host (or * for any)");
        }
        if rest.contains(['@', '?', '#']) {
            return bad("a pattern is scheme://host[:port]; no user, query or fragment");
        }
        let (host, port) =
            split_host_port(rest).map_err(|why| format!("--allow-outbound {text:?}: {why}"))?;
        let host = parse_host(host).map_err(|why| format!("--allow-outbound {text:?}: {why}"))?;
        let ports = match (port, scheme) {
            (Some(p), _) => parse_ports(p).map_err(|why| format!("--allow-outbound {text:?}: {why}"))?,
            (None, SchemeMatch::Http) => (80, 80),
            (None, SchemeMatch::Https) => (443, 443),
            (None, SchemeMatch::Any) => {
                return bad("with the * scheme, name the port (:443, :8000..8010 or :*)");
            }
        };
        Ok(OutboundPattern { text: text.to_string(), scheme, host, ports })
    }

    /// Whether a request to `scheme://host:port` is granted. `host` is
    /// lowercase, an IPv6 address without brackets.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            SchemeMatch::Http => scheme == "http",
            SchemeMatch::Https => scheme == "https",
            SchemeMatch::Any => scheme == "http" || scheme == "https",
        };
        if !scheme_ok || port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        let internal = is_internal(host);
        match &self.host {
            // `*` is the internet: other functions are granted by name.
            HostMatch::Any => !internal,
            HostMatch::Exact(h) => h == host,
            HostMatch::Subdomains(d) => {
                let sub = host.strip_suffix(d.as_str()).is_some_and(|s| s.len() > 1 && s.ends_with('.'));
                sub && (!internal || d == INTERNAL_DOMAIN)
            }
            HostMatch::Net(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }

    /// Whether this pattern names `ip` itself (its address, its network, or
    /// `localhost` for a loopback address). Private and local addresses are
    /// reachable only through such a pattern, never through a wildcard or
    /// a public name that resolves to one.
    pub fn names_address(&self, ip: IpAddr) -> bool {
        match &self.host {
            HostMatch::Net(net) => net.contains(&ip),
            HostMatch::Exact(h) => h == "localhost" && ip.is_loopback(),
            _ => false,
        }
    }
}

/// Whether `host` is a function's name under [`INTERNAL_DOMAIN`].
pub fn is_internal(host: &str) -> bool {
    host.strip_suffix(INTERNAL_DOMAIN).is_some_and(|s| s.ends_with('.'))
}

/// The function a `NAME.tern.internal` host names, if it is one.
pub fn internal_function(host: &str) -> Option<&str> {
    let name = host.strip_suffix(INTERNAL_DOMAIN)?.strip_suffix('.')?;
    crate::validate_function_name(name).ok().map(|_| name)
}

/// Splits `host[:port]`, where an IPv6 host (or network) is in brackets.
fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("an IPv6 address must be closed with ]".into());
        };
        return match after {
            "" => Ok((host, None)),
            p if p.starts_with(':') => Ok((host, Some(&p[1..]))),
            _ => Err("no path: a pattern is scheme://host[:port]".into()),
        };
    }
    let (host, port) = match rest.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    // A slash is a CIDR prefix length, never a path.
    if let Some((_, len)) = host.split_once('/')
        && (len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("no path: a pattern is scheme://host[:port]".into());
    }
    if port.is_some_and(|p| p.contains('/')) {
        return Err("no path: a pattern is scheme://host[:port]".into());
    }
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<HostMatch, String> {
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    if host.contains('/') {
        let net: IpNet = host.parse().map_err(|_| format!("{host:?} is not a CIDR network"))?;
        return Ok(HostMatch::Net(net.trunc()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostMatch::Net(IpNet::from(ip)));
    }
    let lower = host.to_ascii_lowercase();
    if let Some(domain) = lower.strip_prefix("*.") {
        check_name(domain)?;
        return Ok(HostMatch::Subdomains(domain.to_string()));
    }
    if lower.contains('*') {
        return Err(format!("{host:?}: a wildcard is the whole host (*) or its first label (*.example.com)"));
    }
    check_name(&lower)?;
    Ok(HostMatch::Exact(lower))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok { Ok(()) } else { Err(format!("{name:?} is not a valid host name")) }
}

fn parse_ports(p: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| s.parse::<u16>().map_err(|_| format!("port {s:?} is not a number in 0..=65535"));
    if p == "*" {
        return Ok((0, u16::MAX));
    }
    if let Some((a, b)) = p.split_once("..") {
        let (a, b) = (port(a)?, port(b)?);
        if a > b {
            return Err(format!("port range {p:?} is empty"));
        }
        return Ok((a, b));
    }
    let p = port(p)?;
    Ok((p, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> OutboundPattern {
        OutboundPattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn schemes_hosts_and_ports() {
        let exact = p("https://api.example.com");
        assert!(exact.matches("https", "api.example.com", 443));
        assert!(!exact.matches("http", "api.example.com", 443), "scheme");
        assert!(!exact.matches("https", "api.example.com", 8443), "default port only");
        assert!(!exact.matches("https", "x.api.example.com", 443));
        assert!(
            p("HTTPS://API.Example.com").matches("https", "api.example.com", 443),
            "names are case-blind"
        );

        let sub = p("https://*.example.com");
        assert!(sub.matches("https", "a.example.com", 443));
        assert!(sub.matches("https", "a.b.example.com", 443));
        assert!(!sub.matches("https", "example.com", 443), "not the domain itself");
        assert!(!sub.matches("https", "badexample.com", 443));

        let any = p("*://*:*");
        assert!(any.matches("http", "example.com", 1));
        assert!(any.matches("https", "10.0.0.1", 65535));

        let range = p("http://localhost:8000..8010");
        assert!(range.matches("http", "localhost", 8000) && range.matches("http", "localhost", 8010));
        assert!(!range.matches("http", "localhost", 8011));
        assert!(p("*://example.com:8080").matches("https", "example.com", 8080));
    }

    #[test]
    fn addresses_and_networks() {
        let ip = p("http://127.0.0.1:9000");
        assert!(ip.matches("http", "127.0.0.1", 9000));
        assert!(ip.names_address("127.0.0.1".parse().unwrap()));
        assert!(!ip.names_address("127.0.0.2".parse().unwrap()));
        let net = p("http://10.0.0.0/8:*");
        assert!(net.matches("http", "10.1.2.3", 80) && !net.matches("http", "11.0.0.1", 80));
        assert!(net.names_address("10.9.9.9".parse().unwrap()));
        let v6 = p("https://[fd00::/8]:443");
        assert!(v6.matches("https", "fd12::1", 443));
        assert!(p("http://[::1]:8080").matches("http", "::1", 8080));
        assert!(p("http://localhost:1").names_address("127.0.0.1".parse().unwrap()));
        assert!(!p("*://*:*").names_address("127.0.0.1".parse().unwrap()), "a wildcard names nothing");
        assert!(!p("https://evil.example").names_address("169.254.169.254".parse().unwrap()));
    }

    #[test]
    fn functions_are_granted_by_name_only() {
        assert!(p("http://b.tern.internal").matches("http", "b.tern.internal", 80));
        assert!(!p("http://b.tern.internal").matches("http", "c.tern.internal", 80));
        assert!(p("http://*.tern.internal").matches("http", "c.tern.internal", 80));
        assert!(!p("*://*:*").matches("http", "b.tern.internal", 80), "* is the internet");
        assert!(!p("http://*.internal").matches("http", "b.tern.internal", 80));
        assert_eq!(internal_function("b-2.tern.internal"), Some("b-2"));
        assert_eq!(internal_function("tern.internal"), None);
        assert_eq!(internal_function("a.b.tern.internal"), None);
        assert!(!is_internal("xtern.internal"));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, why) in [
            ("example.com", "scheme"),
            ("ftp://example.com", "scheme must be"),
            ("https://example.com/path", "no path"),
            ("https://example.com:443/x", "no path"),
            ("https://", "name a host"),
            ("*://example.com", "name the port"),
            ("https://ex*ample.com", "wildcard"),
            ("https://example.com:99999", "port"),
            ("https://example.com:9..1", "empty"),
            ("https://user@example.com", "no user"),
            ("https://exa mple.com", "not a valid host"),
            ("http://10.0.0.0/99", "CIDR"),
            ("http://[::1", "closed"),
        ] {
            let e = OutboundPattern::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
