//! Checkout: a function that calls another function and publishes an event.
//!
//! ```text
//! tern deploy checkout.wasm --name checkout --route /checkout \
//!   --allow-outbound http://shortener.tern.internal --allow-publish orders.created
//! curl -d '{"total": 12.5}' localhost:8080/checkout
//! # 201 {"id":…,"total":12.5,"receipt":"/s/1"}
//! tern logs audit            # orders.created order … total 12.50
//! ```
//!
//! The receipt link comes from the `shortener` example, called at
//! `http://shortener.tern.internal` (Tern's invoke path, never the network:
//! it is woken from zero if it was idle). The order goes out as an
//! `orders.created` event, durable before the client hears back, for the
//! `audit` example (deployed `--on-event 'orders.>'`) or anyone else.

use serde::{Deserialize, Serialize};
use tern_sdk::{Request, Response, http, json, text, wasi};

#[derive(Deserialize)]
struct Cart {
    total: f64,
}

/// What `audit` reads.
#[derive(Serialize)]
struct Order {
    id: u64,
    total: f64,
}

#[derive(Serialize)]
struct Placed {
    id: u64,
    total: f64,
    receipt: String,
}

#[derive(Deserialize)]
struct Shortened {
    short: String,
}

fn handle(req: Request) -> Response {
    if req.method() != http::Method::POST {
        return text(405, "POST a cart: {\"total\": 12.5}\n");
    }
    let total = match serde_json::from_slice::<Cart>(req.body()) {
        Ok(c) if c.total.is_finite() && c.total >= 0.0 => c.total,
        _ => return text(400, "send a cart as JSON: {\"total\": 12.5}\n"),
    };
    // Below 2^53, so it survives any JSON reader.
    let id = wasi::random::random::get_random_u64() >> 11;

    let receipt = format!("https://shop.example/orders/{id}");
    let call = http::Request::post("http://shortener.tern.internal/s").body(receipt.into_bytes());
    let short = match call
        .map_err(|e| e.to_string())
        .and_then(|c| tern_sdk::fetch::send(c).map_err(|e| e.to_string()))
    {
        Ok(r) if r.status() == 201 => match serde_json::from_slice::<Shortened>(r.body()) {
            Ok(s) => s.short,
            Err(e) => return text(502, format!("the shortener sent an unexpected answer: {e}\n")),
        },
        Ok(r) => return text(502, format!("the shortener answered {}\n", r.status())),
        Err(e) => return text(502, format!("could not reach the shortener: {e}\n")),
    };

    let order = serde_json::to_vec(&Order { id, total }).expect("an order serialises");
    if let Err(e) = tern_sdk::publish::publish("orders.created", order) {
        return text(503, format!("the order was not recorded: {e}\n"));
    }
    json(201, &Placed { id, total, receipt: short })
}

tern_sdk::http_function!(handle);
