//! The smallest Tern function: a greeting, configurable with `--env GREETING=…`.

use tern_sdk::{Request, Response, text};

fn handle(req: Request) -> Response {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
    let name = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
        .unwrap_or("world");
    text(200, format!("{greeting}, {name}!\n"))
}

tern_sdk::http_function!(handle);
