//! Outbound HTTP (`tern deploy … --allow-outbound PATTERN`): send a request
//! with the `http` crate's types and get the whole response back. Other
//! functions are called the same way at `http://NAME.tern.internal/...`
//! (granted with `--allow-outbound http://NAME.tern.internal`); such a call
//! goes through Tern's invoke path, never the network, and wakes NAME from
//! zero.
//!
//! ```ignore
//! let resp = tern_sdk::fetch::get("https://api.example.com/v1/rates")?;
//! let req = http::Request::post("http://shortener.tern.internal/s").body(url.into_bytes())?;
//! let short = tern_sdk::fetch::send(req)?;
//! ```
//!
//! Underneath it is the standard `wasi:http/outgoing-handler`: a request
//! outside the grant fails with `ErrorCode::HttpRequestDenied`.

use crate::{Request, Response};
use std::fmt;
use std::io::{Read, Write};
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};

/// Why a request got no response.
#[derive(Debug)]
pub enum FetchError {
    /// Not an absolute http(s) URL, or a header the host refuses.
    Invalid(String),
    /// The host's answer: `HttpRequestDenied` outside the grant,
    /// `DestinationUnavailable` while a circuit breaker is open, a
    /// connection or TLS error, `HttpResponseBodySize` past
    /// `--max-outbound-body`, and so on.
    Http(ErrorCode),
    /// The response body broke off.
    Body(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Invalid(m) | FetchError::Body(m) => f.write_str(m),
            FetchError::Http(code) => write!(f, "{code:?}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, FetchError> {
    let req = http::Request::get(url).body(Vec::new()).map_err(|e| FetchError::Invalid(e.to_string()))?;
    send(req)
}

/// Sends `req` (its URI absolute: scheme, host, path) and reads the whole
/// response.
pub fn send(req: Request) -> Result<Response, FetchError> {
    let (parts, body) = req.into_parts();
    let uri = &parts.uri;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        other => {
            return Err(FetchError::Invalid(format!(
                "{uri}: the scheme must be http or https, not {other:?}"
            )));
        }
    };
    let authority = uri.authority().ok_or_else(|| FetchError::Invalid(format!("{uri}: no host")))?;
    let entries: Vec<(String, Vec<u8>)> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect();
    let headers = Fields::from_list(&entries).map_err(|e| FetchError::Invalid(format!("headers: {e:?}")))?;
    let out = OutgoingRequest::new(headers);
    let invalid = |what: &str| FetchError::Invalid(format!("{uri}: {what} refused by the host"));
    out.set_method(&method(&parts.method)).map_err(|_| invalid("method"))?;
    out.set_scheme(Some(&scheme)).map_err(|_| invalid("scheme"))?;
    out.set_authority(Some(authority.as_str())).map_err(|_| invalid("authority"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    out.set_path_with_query(Some(path)).map_err(|_| invalid("path"))?;
    let outgoing = out.body().expect("a new request has a body");
    let future = outgoing_handler::handle(out, None).map_err(FetchError::Http)?;
    {
        let mut stream = outgoing.write().expect("a new body has a stream");
        stream
            .write_all(&body)
            .and_then(|_| Write::flush(&mut stream))
            .map_err(|e| FetchError::Body(e.to_string()))?;
    }
    OutgoingBody::finish(outgoing, None).map_err(FetchError::Http)?;

    future.subscribe().block();
    let incoming = future.get().expect("ready after block").expect("taken once").map_err(FetchError::Http)?;
    let mut builder = http::Response::builder().status(incoming.status());
    for (name, value) in incoming.headers().entries() {
        builder = builder.header(name, value);
    }
    let body = incoming.consume().expect("a response body is taken once");
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().expect("a body stream is taken once");
        if let Err(e) = stream.read_to_end(&mut bytes) {
            return Err(FetchError::Body(e.to_string()));
        }
    }
    drop(IncomingBody::finish(body));
    builder.body(bytes).map_err(|e| FetchError::Invalid(e.to_string()))
}

fn method(m: &http::Method) -> Method {
    match *m {
        http::Method::GET => Method::Get,
        http::Method::HEAD => Method::Head,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::DELETE => Method::Delete,
        http::Method::OPTIONS => Method::Options,
        http::Method::PATCH => Method::Patch,
        http::Method::CONNECT => Method::Connect,
        http::Method::TRACE => Method::Trace,
        ref other => Method::Other(other.as_str().to_string()),
    }
}
