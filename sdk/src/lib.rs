//! Write Tern functions in Rust.
//!
//! An HTTP function is a plain `wasi:http/proxy` component; this crate only
//! makes it short to write, with the `http` crate's request and response
//! types:
//!
//! ```ignore
//! use tern_sdk::{Request, Response};
//!
//! fn handle(req: Request) -> Response {
//!     tern_sdk::text(200, format!("hello from {}\n", req.uri().path()))
//! }
//!
//! tern_sdk::http_function!(handle);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` as a `cdylib`,
//! and deploy the `.wasm` with `tern deploy`.
//!
//! For several routes in one function, [`Router`] matches paths with the same
//! rules as the gateway (`:param`, trailing `*`, most specific wins).
//!
//! An event function exports `tern:function/event-handler` (the WIT is in
//! this crate's `wit/`); [`event_function!`] makes it one line:
//!
//! ```ignore
//! fn handle(event: tern_sdk::Event) -> Result<(), String> {
//!     println!("{} on {}", event.id, event.subject);
//!     Ok(())
//! }
//!
//! tern_sdk::event_function!(handle);
//! ```

//! State: [`kv`] opens the key-value buckets the function was granted
//! (`tern deploy … --kv NAME`), with counters, compare-and-swap, time to
//! live and a lock; [`config`] reads its `--env` values and granted secrets
//! (`--secret NAME`). Both are the standard `wasi:keyvalue` and
//! `wasi:config` interfaces underneath, plus `tern:kv/revisions` (in
//! `wit/deps/tern-kv`) for what the keyvalue draft lacks.
//!
//! Events: [`publish`] publishes on the subjects the function was granted
//! (`--allow-publish SUBJECT`), through `tern:events/publisher`.
//!
//! Streaming: [`streaming_function!`] and [`stream`] send the head at once
//! and the body as it is written (server-sent events, large downloads).
//!
//! Reaching out: [`fetch`] sends HTTP requests to the hosts the function
//! was granted (`--allow-outbound PATTERN`), and calls other functions at
//! `http://NAME.tern.internal`.

pub use http;
pub use wasi;

pub mod config;
pub mod event;
pub mod fetch;
pub mod kv;
pub mod publish;
mod router;
mod serve;
pub mod state;
pub mod stream;

pub use event::Event;
pub use router::{Params, Router};

/// A request with its whole body read.
pub type Request = http::Request<Vec<u8>>;
/// A response with its whole body.
pub type Response = http::Response<Vec<u8>>;

/// What a handler may return.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        text(200, self)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        text(200, self)
    }
}

/// An error becomes a 500 with its message (and a line on stderr, which
/// lands in `tern logs`).
impl<T: IntoResponse, E: std::fmt::Display> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(r) => r.into_response(),
            Err(e) => {
                eprintln!("handler error: {e}");
                text(500, format!("{e}\n"))
            }
        }
    }
}

/// A `text/plain` response.
pub fn text(status: u16, body: impl Into<String>) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body.into().into_bytes())
        .expect("static header is valid")
}

/// An `application/json` response.
#[cfg(feature = "json")]
pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body)
            .expect("static header is valid"),
        Err(e) => text(500, format!("could not serialise response: {e}\n")),
    }
}

/// Parses a JSON request body, or explains in a 400 why it could not.
#[cfg(feature = "json")]
pub fn parse_json<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, Response> {
    serde_json::from_slice(req.body()).map_err(|e| text(400, format!("invalid JSON body: {e}\n")))
}

#[doc(hidden)]
pub mod __private {
    pub use crate::serve::{read_request, serve};
}

/// Exports `handler` (a `fn(Request, stream::Responder)`) as the
/// component's `wasi:http/incoming-handler`: it starts the response itself
/// and writes the body as it goes (see [`stream`]).
#[macro_export]
macro_rules! streaming_function {
    ($handler:path) => {
        struct __TernStreamingFunction;

        impl $crate::wasi::exports::http::incoming_handler::Guest for __TernStreamingFunction {
            fn handle(
                request: $crate::wasi::http::types::IncomingRequest,
                out: $crate::wasi::http::types::ResponseOutparam,
            ) {
                match $crate::__private::read_request(request) {
                    Ok(req) => $handler(req, $crate::stream::Responder::new(out)),
                    Err(e) => {
                        let msg = format!("could not read the request: {e}\n");
                        let mut body = $crate::stream::Responder::new(out).start(400, &[("content-type", "text/plain")]);
                        let _ = ::std::io::Write::write_all(&mut body, msg.as_bytes());
                    }
                }
            }
        }

        $crate::wasi::http::proxy::export!(__TernStreamingFunction with_types_in $crate::wasi);
    };
}

/// Exports `handler` (a `fn(Request) -> impl IntoResponse`) as the
/// component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! http_function {
    ($handler:path) => {
        struct __TernHttpFunction;

        impl $crate::wasi::exports::http::incoming_handler::Guest for __TernHttpFunction {
            fn handle(
                request: $crate::wasi::http::types::IncomingRequest,
                out: $crate::wasi::http::types::ResponseOutparam,
            ) {
                $crate::__private::serve(request, out, $handler)
            }
        }

        $crate::wasi::http::proxy::export!(__TernHttpFunction with_types_in $crate::wasi);
    };
}
