//! A URL shortener on a key-value bucket: state that outlives a request.
//!
//! ```text
//! tern deploy shortener.wasm --name shortener --route /s --route '/s/*' --kv links
//! curl -d https://example.com localhost:8080/s      # {"code":"1","short":"/s/1",...}
//! curl -i localhost:8080/s/1                        # 302 to https://example.com
//! curl localhost:8080/s/1/stats                     # {"code":"1","url":...,"visits":1}
//! ```
//!
//! Codes come from an atomic counter (`increment`), so two workers never
//! hand out the same one; visits are counted the same way.

use serde::Serialize;
use tern_sdk::{Params, Request, Response, Router, json, kv};

const BUCKET: &str = "links";
const MAX_URL: usize = 2048;

#[derive(Serialize)]
struct Link {
    code: String,
    url: String,
    short: String,
    visits: u64,
}

fn error(status: u16, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Error {
        error: String,
    }
    json(status, &Error { error: message.into() })
}

fn shorten(req: Request, _: Params) -> Result<Response, kv::Error> {
    let url = String::from_utf8_lossy(req.body()).trim().to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > MAX_URL {
        return Ok(error(400, format!("send an http(s) URL of at most {MAX_URL} bytes as the body")));
    }
    let links = kv::open(BUCKET)?;
    let code = base62(links.increment("next-code", 1)?);
    links.set(&format!("url/{code}"), &url)?;
    Ok(json(201, &Link { short: format!("/s/{code}"), code, url, visits: 0 }))
}

fn follow(_: Request, p: Params) -> Result<Response, kv::Error> {
    let code = p.get("code").unwrap_or_default();
    let links = kv::open(BUCKET)?;
    let Some(url) = links.get_string(&format!("url/{code}"))? else {
        return Ok(error(404, format!("no link {code}")));
    };
    links.increment(&format!("visits/{code}"), 1)?;
    let mut resp = tern_sdk::text(302, format!("{url}\n"));
    resp.headers_mut().insert("location", url.parse().expect("a stored URL is a valid header"));
    Ok(resp)
}

fn stats(_: Request, p: Params) -> Result<Response, kv::Error> {
    let code = p.get("code").unwrap_or_default().to_string();
    let links = kv::open(BUCKET)?;
    let Some(url) = links.get_string(&format!("url/{code}"))? else {
        return Ok(error(404, format!("no link {code}")));
    };
    let visits = links.get_string(&format!("visits/{code}"))?.and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(json(200, &Link { short: format!("/s/{code}"), code, url, visits }))
}

fn base62(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII")
}

/// A handler's bucket error as a response: the platform's message, which
/// says what to do (grant the bucket, a limit that was hit).
fn or_500(r: Result<Response, kv::Error>) -> Response {
    r.unwrap_or_else(|e| error(500, e.to_string()))
}

fn handle(req: Request) -> Response {
    Router::new()
        .post("/s", |r, p| or_500(shorten(r, p)))
        .get("/s/:code", |r, p| or_500(follow(r, p)))
        .get("/s/:code/stats", |r, p| or_500(stats(r, p)))
        .handle(req)
}

tern_sdk::http_function!(handle);
