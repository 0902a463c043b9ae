//! Dirties memory in the patterns that show how a slot's pages are reset
//! between fresh instances (tests/tests/resident.rs). Its own guest, not a
//! path of `hostile`: the 12 MiB array is part of every instance's memory,
//! and other tests measure what a small request of `hostile` takes.
//!
//! `/scatter` writes one byte in every fourth 4 KiB page of the array's top
//! 4 MiB (256 separate dirty runs, as an interpreter's heap leaves after a
//! request) and answers how many of those bytes it found already written;
//! a fresh instance must find none. `/fill` does the same check, then
//! writes every page (3,072, more than the 8 MiB a slot keeps resident),
//! below `scatter`'s as well.

use std::sync::atomic::{AtomicU8, Ordering};
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

const PAGES: usize = 3072;
const SCATTERED: std::ops::Range<usize> = 2048..3072;
static ARRAY: [AtomicU8; PAGES * 4096] = [const { AtomicU8::new(0) }; PAGES * 4096];

struct Scatter;

impl wasi::exports::http::incoming_handler::Guest for Scatter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let fill = path.ends_with("/fill");
        let written = |page: &usize| ARRAY[page * 4096].load(Ordering::Relaxed) != 0;
        let stale = SCATTERED.step_by(4).filter(written).count();
        let pages = if fill { (0..PAGES).step_by(1) } else { SCATTERED.step_by(4) };
        for page in pages {
            ARRAY[page * 4096].store(1, Ordering::Relaxed);
        }

        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().unwrap();
        stream.blocking_write_and_flush(format!("stale {stale}\n").as_bytes()).unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}

wasi::http::proxy::export!(Scatter);
