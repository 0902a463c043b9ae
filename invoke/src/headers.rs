//! Which headers travel in an invoke frame: the same rule for a client's
//! request through the gateway and a call between functions.

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1):
/// never forwarded. `trailer` (which trailers follow; hyper sends only
/// those it names) is end to end. So is `content-length`: the gateway has
/// checked the client's against the body it read, and wasmtime checks a
/// guest's against the body it wrote.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"];

pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The end-to-end headers of a request, as an invoke frame carries them;
/// a value that is not UTF-8 is dropped.
pub fn forwarded(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !is_hop_by_hop(k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// A response builder with a function's answer's status and end-to-end
/// headers.
pub fn response_head(status: u16, headers: &[(String, String)]) -> http::response::Builder {
    let mut builder = http::Response::builder().status(status);
    for (k, v) in headers {
        if !is_hop_by_hop(k) {
            builder = builder.header(k, v);
        }
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = http::HeaderMap::new();
        h.insert("connection", "close".parse().unwrap());
        h.insert("x-id", "7".parse().unwrap());
        assert_eq!(forwarded(&h), vec![("x-id".to_string(), "7".to_string())]);
        let r =
            response_head(201, &[("Transfer-Encoding".into(), "chunked".into()), ("a".into(), "b".into())])
                .body(())
                .unwrap();
        assert_eq!(r.status(), 201);
        assert!(r.headers().get("transfer-encoding").is_none() && r.headers()["a"] == "b");
    }
}
