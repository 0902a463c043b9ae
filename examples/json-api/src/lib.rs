//! A small JSON API: several routes with path parameters in one function.
//!
//! Deploy it on the routes it serves, e.g.
//! `--route /api/greet/:name --route /api/add/:a/:b --route /api/echo --route /api/info/*`.

use serde::{Deserialize, Serialize};
use tern_sdk::{Params, Request, Response, Router, json, parse_json};

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

#[derive(Serialize)]
struct Sum {
    a: i64,
    b: i64,
    sum: i64,
}

#[derive(Deserialize, Serialize)]
struct Note {
    title: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Serialize)]
struct Echo {
    received: Note,
    title_length: usize,
}

#[derive(Serialize)]
struct Info {
    method: String,
    path: String,
    rest: String,
    query: Option<String>,
}

fn greet(_req: Request, p: Params) -> Response {
    json(200, &Greeting { greeting: format!("Hello, {}!", p.get("name").unwrap_or("stranger")) })
}

fn add(_req: Request, p: Params) -> Response {
    let num = |k: &str| p.get(k).and_then(|v| v.parse::<i64>().ok());
    match (num("a"), num("b")) {
        (Some(a), Some(b)) => match a.checked_add(b) {
            Some(sum) => json(200, &Sum { a, b, sum }),
            None => json(422, &serde_json::json!({ "error": "sum overflows a 64-bit integer" })),
        },
        _ => json(400, &serde_json::json!({ "error": "a and b must be integers" })),
    }
}

fn echo(req: Request, _p: Params) -> Response {
    match parse_json::<Note>(&req) {
        Ok(note) => {
            let title_length = note.title.chars().count();
            json(200, &Echo { received: note, title_length })
        }
        Err(bad) => bad,
    }
}

fn info(req: Request, p: Params) -> Response {
    json(
        200,
        &Info {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            rest: p.get("*").unwrap_or("").to_string(),
            query: req.uri().query().map(str::to_string),
        },
    )
}

fn handle(req: Request) -> Response {
    Router::new()
        .get("/api/greet/:name", greet)
        .get("/api/add/:a/:b", add)
        .post("/api/echo", echo)
        .get("/api/info/*", info)
        .handle(req)
}

tern_sdk::http_function!(handle);
