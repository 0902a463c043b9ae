//! The dashboard at /ui in headless Chromium (WebDriver): a wrong token is
//! refused; with the right one the functions page shows the deployed
//! functions with live numbers; a function's chart moves under load; the
//! rollback button changes the active version; a dead letter replayed from
//! the page is gone; nodes and event triggers have pages. Screenshots of
//! each page are kept in target/ui-screenshots/.

use std::time::Duration;
use tern_tests::browser::Browser;
use tern_tests::{TernUp, eventually, guest, target_dir};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn the_dashboard_shows_functions_and_acts_on_them() {
    let (_dir, up) = TernUp::start_temp();
    let hostile = guest("hostile");
    up.deploy(&hostile, "h", &["--route", "/h/*", "--env", "V=1"]);
    up.deploy(&hostile, "h", &["--route", "/h/*", "--env", "V=2"]);
    // Fails its first two attempts: with --max-attempts 2 it is a dead
    // letter, and a replay (attempt 3) handles it.
    up.deploy(
        &guest("plain_event"),
        "sink",
        &["--on-event", "orders.>", "--max-attempts", "2", "--backoff", "100ms"],
    );
    up.tern_ok(&["publish", "orders.flaky", "x"]);
    assert!(eventually(WAIT, || up.tern_ok(&["dlq", "list", "sink", "--json"]).contains("orders.flaky")));

    let shots = target_dir().join("ui-screenshots");
    let b = Browser::start();
    b.goto(&format!("{}/ui", up.url));

    // A wrong token is refused, and the page says so.
    let field = b.wait_for("#token", WAIT);
    b.type_into(&field, "not-the-token");
    b.click(&b.find("#login").unwrap());
    b.wait_until("the refusal", WAIT, |b| {
        b.find("#login-error").is_some_and(|e| b.text(&e).contains("refused"))
    });
    assert!(b.find("#functions").is_none(), "nothing shown without the token");
    b.screenshot(&shots.join("login-refused.png"));

    // The right one: the functions page, with both functions.
    let field = b.wait_for("#token", WAIT);
    b.type_into(&field, &up.token);
    b.click(&b.find("#login").unwrap());
    b.wait_for("#functions tr[data-function='h']", WAIT);
    b.wait_for("#functions tr[data-function='sink']", WAIT);
    let row = b.find("#functions tr[data-function='h']").unwrap();
    assert!(b.text(&row).contains("v2"), "{}", b.text(&row));
    assert!(b.text(&b.find("#functions tr[data-function='sink']").unwrap()).contains("event orders.>"));

    // Live numbers: load makes h's request rate show up.
    let load = {
        let url = format!("{}/h/ok", up.url);
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let until = std::time::Instant::now() + Duration::from_secs(14);
            while std::time::Instant::now() < until {
                let _ = client.get(&url).send();
            }
        })
    };
    let rps = |b: &Browser| {
        let cell = b.find("#functions tr[data-function='h'] td.rps");
        cell.and_then(|c| b.text(&c).trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    b.wait_until("a request rate for h", WAIT, |b| rps(b) > 0.0);
    b.screenshot(&shots.join("functions.png"));

    // One function: its request chart moves.
    b.click(&b.find("#functions tr[data-function='h'] a").unwrap());
    let chart_max = |b: &Browser| {
        b.find("#chart-rate")
            .and_then(|c| b.attribute(&c, "data-max"))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    b.wait_for("#chart-rate", WAIT);
    b.wait_until("the request chart to rise", WAIT, |b| chart_max(b) > 1.0);
    b.wait_until("the invocations table", WAIT, |b| b.find("#invocations tbody tr").is_some());
    b.wait_until("log lines", WAIT, |b| b.find("#logs").is_some_and(|l| b.text(&l).contains("REPORT")));
    load.join().unwrap();
    b.screenshot(&shots.join("function.png"));

    // Roll back from the page.
    let active = |b: &Browser| b.find("#active-version").map(|e| b.text(&e)).unwrap_or_default();
    b.wait_until("the active version", WAIT, |b| active(b) == "2");
    b.click(&b.wait_for("button.rollback[data-version='1']", WAIT));
    b.wait_until("the rollback to show", WAIT, |b| active(b) == "1");
    assert_eq!(up.describe("h")["active_version"], 1, "the rollback happened, not only on the page");

    // Replay the dead letter from its function's page.
    b.goto(&format!("{}/ui#/f/sink", up.url));
    b.click(&b.wait_for("#dead-letters button.replay", WAIT));
    b.wait_until("the dead letter to go", WAIT, |b| b.find("#dead-letters button.replay").is_none());
    assert!(!up.tern_ok(&["dlq", "list", "sink", "--json"]).contains("orders.flaky"));
    b.screenshot(&shots.join("function-events.png"));

    // Nodes, and event triggers.
    b.goto(&format!("{}/ui#/nodes", up.url));
    let node = b.wait_for("#nodes tr[data-node='local']", WAIT);
    assert!(b.text(&node).contains("alive"), "{}", b.text(&node));
    b.screenshot(&shots.join("nodes.png"));
    b.goto(&format!("{}/ui#/events", up.url));
    let trigger = b.wait_for("#triggers tr[data-function='sink']", WAIT);
    assert!(b.text(&trigger).contains("orders.>"), "{}", b.text(&trigger));
    b.screenshot(&shots.join("events.png"));

    // The assets need no token, and come from the binary with a strict
    // content security policy (nothing from elsewhere runs).
    let page = reqwest::blocking::get(format!("{}/ui", up.url)).unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!page.text().unwrap().contains("http"), "no external URL in the page");
    assert_eq!(reqwest::blocking::get(format!("{}/ui/nope.js", up.url)).unwrap().status(), 404);
}
