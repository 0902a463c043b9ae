//! The `Host` header as RFC 3986 allows it: `host[:port]`, where host is a
//! bracketed IPv6 literal, or a reg-name / IPv4 address made only of
//! unreserved characters, percent escapes and sub-delims. No userinfo, no
//! path, query or fragment characters, no whitespace: a Host that could
//! change a URI built from it is refused.

/// Whether `value` is a valid `Host` header value.
pub fn valid(value: &str) -> bool {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(port) => ("", port),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match value.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (value, ""),
        },
    };
    let reg_name_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
    let escapes_ok =
        host.split('%').skip(1).all(|e| e.len() >= 2 && e.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit));
    (value.starts_with('[') || (!host.is_empty() && host.bytes().all(reg_name_char) && escapes_ok))
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_could_rewrite_a_uri_are_refused() {
        for ok in ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]", "[::1]:8080", "a-b_c~d", "x:"]
        {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "x/api/info/INJECTED?",
            "x?y",
            "x#y",
            "user@x",
            "x y",
            "",
            "[::1",
            "[nope]",
            "x:80a",
            "x:123456",
            "a%zz",
            "a%2",
            "[::1]x",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }
}
