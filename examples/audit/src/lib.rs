//! An event function: records each order event in the function's log.
//!
//! Deploy it on a subject and publish to it:
//!
//! ```sh
//! tern deploy audit.wasm --name audit --on-event 'orders.>'
//! tern publish orders.created '{"id": 7, "total": 12.5}'
//! tern logs audit
//! ```
//!
//! Data that is not an order is an error, so Tern retries it and, after the
//! last attempt, keeps it as a dead letter (`tern dlq list audit`).

use serde::Deserialize;
use tern_sdk::Event;

#[derive(Deserialize)]
struct Order {
    id: u64,
    total: f64,
}

fn handle(event: Event) -> Result<(), String> {
    let order: Order = event.json()?;
    println!(
        "{} order {} total {:.2} (event {}, attempt {})",
        event.subject, order.id, order.total, event.id, event.attempt
    );
    Ok(())
}

tern_sdk::event_function!(handle);
