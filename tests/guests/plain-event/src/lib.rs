//! Behaviour by the subject's last token: `fail` always fails, `flaky`
//! fails on the first two attempts, `nap` sleeps 200 ms, `loop` spins;
//! anything else succeeds. Every delivery prints one line, so tests can
//! count deliveries in `tern logs`, except on `quiet` (for benchmarks of
//! the event path alone).

wit_bindgen::generate!({ path: "../../../sdk/wit", world: "event-function" });

use exports::tern::function::event_handler::Guest;
use tern::function::types::Event;

struct Plain;

impl Guest for Plain {
    fn handle(event: Event) -> Result<(), String> {
        let last = event.subject.rsplit('.').next().unwrap_or("");
        if last != "quiet" {
            // Large data by its size: a log line is not the place for it.
            let data = match event.data.len() {
                n if n > 1024 => format!("<{n} bytes>"),
                _ => String::from_utf8_lossy(&event.data).into_owned(),
            };
            println!(
                "delivery id={} subject={} attempt={} data={data}",
                event.id, event.subject, event.attempt
            );
        }
        match last {
            "fail" => Err(format!("always fails (attempt {})", event.attempt)),
            "flaky" if event.attempt < 3 => Err(format!("flaky (attempt {})", event.attempt)),
            "nap" => {
                std::thread::sleep(std::time::Duration::from_millis(200));
                Ok(())
            }
            "loop" => loop {
                std::hint::black_box(0);
            },
            _ => Ok(()),
        }
    }
}

export!(Plain);
