//! Outbound HTTP from a component written against the public `wasi` crate
//! only (no Tern SDK): `wasi:http/outgoing-handler` as any component uses it.
//!
//! `GET /?url=URL` (the rest of the query, verbatim) sends the request on
//! to URL, else to the `NEXT` config value; with neither it answers
//! `end from NAME`. It answers with the upstream's status and body plus a
//! line `via NAME`, so a chain a → b → c reads back its path; an outbound
//! error is 502 `error: CODE`. The method and body are passed on.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::StreamError;

struct Fetch;

fn env(key: &str) -> Option<String> {
    wasi::cli::environment::get_environment().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl wasi::exports::http::incoming_handler::Guest for Fetch {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let name = env("NAME").unwrap_or_else(|| "fetch".into());
        let query = request.path_with_query().unwrap_or_default();
        let target = query.split_once("?url=").map(|(_, u)| u.to_string()).or_else(|| env("NEXT"));
        let method = request.method();
        let body = read_incoming(request.consume().unwrap()).unwrap_or_default();
        let (status, text) = match target {
            None => (200, format!("end from {name}\n").into_bytes()),
            Some(url) => match fetch(&url, method, &body) {
                Ok((status, mut upstream)) => {
                    upstream.extend_from_slice(format!("via {name}\n").as_bytes());
                    (status, upstream)
                }
                Err(code) => (502, format!("error: {code:?}\n").into_bytes()),
            },
        };
        respond(out, status, &text);
    }
}

fn fetch(url: &str, method: Method, body: &[u8]) -> Result<(u16, Vec<u8>), ErrorCode> {
    let (scheme, rest) = url.split_once("://").ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&method).unwrap();
    req.set_scheme(Some(&match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    }))
    .unwrap();
    req.set_authority(Some(authority)).unwrap();
    req.set_path_with_query(Some(path)).unwrap();
    let out_body = req.body().unwrap();
    let future = outgoing_handler::handle(req, None)?;
    {
        let stream = out_body.write().unwrap();
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).unwrap();
        }
    }
    OutgoingBody::finish(out_body, None).unwrap();
    future.subscribe().block();
    let resp = future.get().expect("ready after block").expect("taken once")?;
    let status = resp.status();
    let body = read_incoming(resp.consume().unwrap())?;
    Ok((status, body))
}

fn read_incoming(body: IncomingBody) -> Result<Vec<u8>, ErrorCode> {
    let mut all = Vec::new();
    {
        let stream = body.stream().unwrap();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => all.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(wasi::http::types::http_error_code(&e)
                        .unwrap_or_else(|| ErrorCode::InternalError(Some(e.to_debug_string()))));
                }
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(all)
}

fn respond(out: ResponseOutparam, status: u16, text: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap();
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).unwrap();
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().unwrap();
    for chunk in text.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

wasi::http::proxy::export!(Fetch);
