//! An HTTP function using key-value buckets and config through the public
//! WIT only (`wasi:keyvalue@0.2.0-draft`, `wasi:config@0.2.0-rc.1`, exactly
//! as wasmtime ships them), with bindings from `wit-bindgen`: no Tern SDK.
//! Tern must run a component written for those interfaces unchanged.
//!
//! Operations, the last path segment (query `b` is the bucket, `k` the key):
//! - `POST /incr?b&k` → the new value; `GET /get?b&k` → the value or 404;
//!   `PUT /set?b&k` (body is the value); `DELETE /del?b&k`; `GET /exists?b&k`;
//! - `GET /keys?b` → every key via `list-keys` cursors, one per line;
//! - `POST /get-many?b` (keys, one per line) → `key<TAB>hex` or `key<TAB>-`;
//!   `POST /set-many?b` (`key<TAB>hex` lines); `POST /delete-many?b` (keys);
//! - `GET /config?k` → the config value or 404; `GET /config-all`;
//! - `GET /open-many?b&k=N`: opens the bucket N times, holding every handle.
//!
//! A store error answers 403 for access-denied, 500 otherwise, with the
//! error's text.

mod kv {
    wit_bindgen::generate!({ path: "../../../sdk/wit/deps/keyvalue", world: "wasi:keyvalue/imports" });
}
mod config {
    wit_bindgen::generate!({ path: "../../../sdk/wit/deps/config", world: "wasi:config/imports" });
}

use config::wasi::config::store as cfg;
use kv::wasi::keyvalue::{atomics, batch, store};
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Guest;

impl wasi::exports::http::incoming_handler::Guest for Guest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        // Served under any prefix: the last segment names the operation.
        let route = route.rsplit('/').next().unwrap_or_default();
        let param = |name: &str| {
            query.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('=')).map(unhex_or_plain)
        };
        let method = request.method();
        let body = read_body(request);
        let (status, reply) = match run(route, &method, param("b"), param("k"), body) {
            Ok(r) => r,
            Err(store::Error::AccessDenied) => (403, b"access-denied".to_vec()),
            Err(store::Error::NoSuchStore) => (404, b"no-such-store".to_vec()),
            Err(store::Error::Other(e)) => (500, format!("error: {e}").into_bytes()),
        };
        respond(out, status, &reply);
    }
}

fn run(
    route: &str,
    method: &Method,
    bucket: Option<String>,
    key: Option<String>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), store::Error> {
    if route == "config" {
        return Ok(match cfg::get(&key.unwrap_or_default()) {
            Ok(Some(v)) => (200, v.into_bytes()),
            Ok(None) => (404, b"no such config key".to_vec()),
            Err(e) => (500, format!("{e:?}").into_bytes()),
        });
    }
    if route == "config-all" {
        let all = cfg::get_all().map_err(|e| store::Error::Other(format!("{e:?}")))?;
        return Ok((200, all.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>().into_bytes()));
    }
    let bucket = bucket.unwrap_or_default();
    if route == "open-many" {
        // Opens the bucket `k` times without dropping a handle (a guest
        // trying to fill host memory with handles).
        let n: usize = key.as_deref().unwrap_or("0").parse().unwrap_or(0);
        let mut held = Vec::new();
        for _ in 0..n {
            match store::open(&bucket) {
                Ok(b) => held.push(b),
                Err(e) => return Ok((200, format!("opened {}: {e:?}", held.len()).into_bytes())),
            }
        }
        return Ok((200, format!("opened {}", held.len()).into_bytes()));
    }
    let b = store::open(&bucket)?;
    let key = key.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    Ok(match (method, route) {
        (Method::Post, "incr") => (200, atomics::increment(&b, &key, 1)?.to_string().into_bytes()),
        (Method::Get, "get") => match b.get(&key)? {
            Some(v) => (200, v),
            None => (404, b"no such key".to_vec()),
        },
        (Method::Put, "set") => {
            b.set(&key, &body)?;
            (204, Vec::new())
        }
        (Method::Delete, "del") => {
            b.delete(&key)?;
            (204, Vec::new())
        }
        (Method::Get, "exists") => (200, b.exists(&key)?.to_string().into_bytes()),
        (Method::Get, "keys") => {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = b.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            (200, keys.iter().map(|k| format!("{k}\n")).collect::<String>().into_bytes())
        }
        (Method::Post, "get-many") => {
            let keys: Vec<String> = text.lines().map(String::from).collect();
            let got = batch::get_many(&b, &keys)?;
            let lines: String = keys
                .iter()
                .zip(got)
                .map(|(k, v)| match v {
                    Some((_, v)) => format!("{k}\t{}\n", hex(&v)),
                    None => format!("{k}\t-\n"),
                })
                .collect();
            (200, lines.into_bytes())
        }
        (Method::Post, "set-many") => {
            let pairs: Vec<(String, Vec<u8>)> = text
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), unhex(v)))
                .collect();
            batch::set_many(&b, &pairs)?;
            (204, Vec::new())
        }
        (Method::Post, "delete-many") => {
            let keys: Vec<String> = text.lines().map(String::from).collect();
            batch::delete_many(&b, &keys)?;
            (204, Vec::new())
        }
        _ => (404, b"no such route".to_vec()),
    })
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else { return out };
    let Ok(stream) = body.stream() else { return out };
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend(chunk);
    }
    out
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).unwrap();
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().unwrap();
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None).unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

/// Query values are hex when they start with `x:` (any bytes as a key).
fn unhex_or_plain(s: &str) -> String {
    match s.strip_prefix("x:") {
        Some(h) => String::from_utf8_lossy(&unhex(h)).into_owned(),
        None => s.to_string(),
    }
}

wasi::http::proxy::export!(Guest);
