//! A streaming response from a component written against the public `wasi`
//! crate: `wasi:http` bodies as any component writes them.
//!
//! Paths are matched by their last segment:
//! - `/lines?n=N&ms=T`: N lines (`data: i`, server-sent events style), one
//!   every T milliseconds;
//! - `/bytes?mib=N`: N MiB as fast as the host takes them;
//! - `/stall?ms=T`: one line, then nothing for T milliseconds, then a last;
//! - `/trap?ms=T`: one line, another T milliseconds later (at once for 0),
//!   then a panic;
//! - `/echo`: the request body, written back as it is read;
//! - `/count`: reads all of the request body, then answers with its size;
//! - `/length?n=N&lie=L`: says content-length N, writes L bytes;
//! - `/trailers`: a body, then trailers (`x-checksum`, named in `trailer`).

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::{InputStream, StreamError};

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
        let mut fields = vec![("content-type".to_string(), content_type)];
        if path == "/length" {
            fields.push(("content-length".to_string(), param(query, "n", 10).to_string().into_bytes()));
        }
        if path == "/trailers" {
            fields.push(("trailer".to_string(), b"x-checksum".to_vec()));
        }
        if path == "/count" {
            // Read it all before answering: the head waits for the body.
            let n = read_all(&request, |_| {});
            let response = OutgoingResponse::new(Fields::from_list(&fields).unwrap());
            let body = response.body().unwrap();
            ResponseOutparam::set(out, Ok(response));
            body.write().unwrap().blocking_write_and_flush(format!("{n}\n").as_bytes()).unwrap();
            OutgoingBody::finish(body, None).unwrap();
            return;
        }
        let headers = Fields::from_list(&fields).unwrap();
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
                let ms = param(query, "ms", 50);
                if ms > 0 {
                    sleep_ms(ms);
                }
                stream.blocking_write_and_flush(b"second\n").unwrap();
                panic!("the guest fails after writing part of its body");
            }
            "/echo" => {
                read_all(&request, |bytes| {
                    // blocking-write-and-flush takes at most 4096 bytes a call.
                    for piece in bytes.chunks(4096) {
                        stream.blocking_write_and_flush(piece).unwrap();
                    }
                });
            }
            "/length" => {
                let chunk = vec![b'x'; 4096];
                let mut left = param(query, "lie", 10) as usize;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if stream.blocking_write_and_flush(&chunk[..n]).is_err() {
                        // Past the content-length: the host refuses it.
                        return;
                    }
                    left -= n;
                }
            }
            "/trailers" => {
                stream.blocking_write_and_flush(b"body\n").unwrap();
                drop(stream);
                let trailers = Fields::from_list(&[("x-checksum".to_string(), b"abc123".to_vec())]).unwrap();
                OutgoingBody::finish(body, Some(trailers)).unwrap();
                return;
            }
            _ => stream.blocking_write_and_flush(b"unknown path\n").unwrap(),
        }
        drop(stream);
        if let Err(e) = OutgoingBody::finish(body, None) {
            // A body shorter than its content-length, say.
            panic!("could not finish the body: {e:?}");
        }
    }
}

/// Reads the request body to its end, handing each piece to `each`; its
/// size.
fn read_all(request: &IncomingRequest, mut each: impl FnMut(&[u8])) -> u64 {
    let body = request.consume().unwrap();
    let input: InputStream = body.stream().unwrap();
    let mut n = 0u64;
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(bytes) => {
                n += bytes.len() as u64;
                each(&bytes);
            }
            Err(StreamError::Closed) => break,
            Err(e) => panic!("the request body broke off: {e:?}"),
        }
    }
    n
}

wasi::http::proxy::export!(Stream);
