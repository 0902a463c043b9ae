//! A streaming response from a component written against the public `wasi`
//! crate: `wasi:http` bodies as any component writes them.
//!
//! Paths are matched by their last segment:
//! - `/lines?n=N&ms=T`: N lines (`data: i`, server-sent events style), one
//!   every T milliseconds;
//! - `/bytes?mib=N`: N MiB as fast as the host takes them;
//! - `/stall?ms=T`: one line, then nothing for T milliseconds, then a last;
//! - `/trap?ms=T`: one line, another T milliseconds later, then a panic.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Stream;

fn param(query: &str, key: &str, default: u64) -> u64 {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap_or(default)
}

fn sleep_ms(ms: u64) {
    wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

impl wasi::exports::http::incoming_handler::Guest for Stream {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        // By its last segment, under whatever route it is deployed.
        let path = &path[path.rfind('/').unwrap_or(0)..];
        let content_type =
            if path == "/lines" { b"text/event-stream".to_vec() } else { b"text/plain".to_vec() };
        let headers = Fields::from_list(&[("content-type".to_string(), content_type)]).unwrap();
        let response = OutgoingResponse::new(headers);
        response.set_status_code(200).unwrap();
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().unwrap();
        match path {
            "/lines" => {
                for i in 0..param(query, "n", 6) {
                    if i > 0 {
                        sleep_ms(param(query, "ms", 200));
                    }
                    stream.blocking_write_and_flush(format!("data: {i}\n\n").as_bytes()).unwrap();
                }
            }
            "/bytes" => {
                // blocking-write-and-flush takes at most 4096 bytes a call.
                let chunk = vec![b'x'; 4096];
                for _ in 0..param(query, "mib", 1) * 256 {
                    stream.blocking_write_and_flush(&chunk).unwrap();
                }
            }
            "/stall" => {
                stream.blocking_write_and_flush(b"first\n").unwrap();
                sleep_ms(param(query, "ms", 60_000));
                stream.blocking_write_and_flush(b"last\n").unwrap();
            }
            "/trap" => {
                stream.blocking_write_and_flush(b"first\n").unwrap();
                sleep_ms(param(query, "ms", 50));
                stream.blocking_write_and_flush(b"second\n").unwrap();
                panic!("the guest fails after writing part of its body");
            }
            _ => stream.blocking_write_and_flush(b"unknown path\n").unwrap(),
        }
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}

wasi::http::proxy::export!(Stream);
