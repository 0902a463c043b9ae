//! The dashboard at `/ui`: three files built into the binary (no CDN, no
//! build step), served without a token. Everything they show comes from
//! the admin API, which asks for one; the page asks the user for it once
//! and keeps it in the browser session.

use crate::body::{Body, full, text};
use bytes::Bytes;
use http::{Response, StatusCode};

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The asset at `path` (a normal path under `/ui`).
pub fn asset(path: &str) -> Response<Body> {
    let (content_type, body) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/ui/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return text(StatusCode::NOT_FOUND, format!("no dashboard file {path}")),
    };
    let mut r = full(StatusCode::OK, content_type, Bytes::from_static(body.as_bytes()));
    let h = r.headers_mut();
    // The page runs only its own files, and is never framed by another site.
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r
}
