//! Secrets and operators' key-value access in `tern up`: a secret reaches
//! only the functions granted it, through wasi:config; it rotates without
//! a redeploy; and its value is nowhere else (data dir, logs, describe, any
//! API answer).

use reqwest::Method;
use std::path::Path;
use tern_tests::{TernUp, guest};

/// Every file under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn secrets_reach_granted_functions_rotate_and_leak_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = TernUp::start(&data);
    let first = format!("first-{}", tern_protocol::id::random_hex::<12>());
    let second = format!("second-{}", tern_protocol::id::random_hex::<12>());

    // Deploying a grant of a secret that is not set is refused.
    let kv = guest("kv_wit");
    let kv = kv.to_str().unwrap();
    let e = up.tern_err(&["deploy", kv, "--name", "reader", "--route", "/reader/*", "--secret", "api-key"]);
    assert!(e.contains("secret \"api-key\" is not set") && e.contains("tern secret set api-key"), "{e}");

    let out = up.tern_with_stdin(&["secret", "set", "api-key"], format!("{first}\n").as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    up.deploy(
        Path::new(kv),
        "reader",
        &["--route", "/reader/*", "--secret", "api-key", "--env", "MODE=prod"],
    );
    up.deploy(Path::new(kv), "plain", &["--route", "/plain/*"]);

    // Granted: read through wasi:config, beside its env. Ungranted: absent.
    assert_eq!(up.get("/reader/config?k=api-key").body, first, "the trailing newline is dropped");
    assert_eq!(up.get("/reader/config-all").body, format!("MODE=prod\napi-key={first}\n"));
    assert_eq!(up.get("/plain/config?k=api-key").status, 404);

    // A secret named like an env key is refused (one config key each).
    let e = up.tern_err(&["deploy", kv, "--name", "both", "--secret", "api-key", "--env", "api-key=x"]);
    assert!(e.contains("both an --env value and a --secret"), "{e}");

    let list = up.tern_ok(&["secret", "list"]);
    assert!(list.contains("api-key") && list.contains("reader") && !list.contains(&first), "{list}");
    let e = up.tern_err(&["secret", "delete", "api-key"]);
    assert!(e.contains("granted to reader") && e.contains("--force"), "{e}");

    // Rotation: the next request reads the new value, no redeploy.
    let out = up.tern_with_stdin(&["secret", "set", "api-key"], second.as_bytes());
    assert!(out.status.success());
    assert_eq!(up.get("/reader/config?k=api-key").body, second);
    assert_eq!(up.describe("reader")["active_version"], 1, "no new version");

    // The values are nowhere else: not in what the API or CLI answer, not
    // in the data dir (sealed at rest), not in the logs.
    let mut answers = vec![
        up.tern_ok(&["describe", "reader", "--json"]),
        up.tern_ok(&["describe", "reader"]),
        up.tern_ok(&["list", "--json"]),
        up.tern_ok(&["status", "--json"]),
        up.tern_ok(&["secret", "list", "--json"]),
        up.tern_ok(&["logs", "reader"]),
    ];
    for path in ["/api/v1/secrets", "/api/v1/functions/reader", "/api/v1/functions", "/api/v1/status"] {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", up.url))
            .bearer_auth(&up.token)
            .send()
            .unwrap();
        answers.push(r.text().unwrap());
    }
    for (i, a) in answers.iter().enumerate() {
        assert!(!a.contains(&first) && !a.contains(&second), "answer {i} shows a secret: {a}");
    }
    assert!(answers[4].contains("api-key"), "the list names it");
    for value in [&first, &second] {
        let holding = files_holding(&data, value.as_bytes());
        assert!(holding.is_empty(), "secret value stored in the clear in {holding:?}");
        assert!(!up.log_text().contains(value.as_str()), "secret value in tern up's log");
    }

    // Forced delete: the granted function reads no value from then on.
    up.tern_ok(&["secret", "delete", "api-key", "--force"]);
    assert_eq!(up.get("/reader/config?k=api-key").status, 404);
    assert!(up.tern_ok(&["secret", "list"]).contains("no secrets"));
}

#[test]
fn operators_read_and_write_buckets_with_the_cli_and_the_api() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("kv_wit"), "kv", &["--route", "/kv/*", "--kv", "shared"]);
    up.tern_ok(&["kv", "set", "shared", "greeting", "hello from the operator"]);
    assert_eq!(up.get("/kv/get?b=shared&k=greeting").body, "hello from the operator");

    // What the function writes, the operator reads, byte for byte.
    let r = up.request(Method::PUT, "/kv/set?b=shared&k=user/1", Some(b"\x00\xffbin".to_vec()));
    assert_eq!(r.status, 204);
    let out = up.tern(&["kv", "get", "shared", "user/1"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"\x00\xffbin");
    let odd = "a key/../with ?&= and ünïcode";
    let out = up.tern_with_stdin(&["kv", "set", "shared", odd], b"from stdin");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(up.tern_ok(&["kv", "get", "shared", odd]), "from stdin");

    assert_eq!(up.tern_ok(&["kv", "list", "shared"]), format!("{odd}\ngreeting\nuser/1\n"));
    assert_eq!(up.tern_ok(&["kv", "list", "shared", "--prefix", "user/"]), "user/1\n");
    let listed: serde_json::Value =
        serde_json::from_str(&up.tern_ok(&["kv", "list", "shared", "--json"])).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 3);

    // The path form, for curl.
    let http = reqwest::blocking::Client::new();
    let r = http.get(format!("{}/api/v1/kv/shared/user/1", up.url)).bearer_auth(&up.token).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("tern-revision"));
    assert_eq!(&r.bytes().unwrap()[..], b"\x00\xffbin");
    let r = http.get(format!("{}/api/v1/kv/shared/user/1", up.url)).send().unwrap();
    assert_eq!(r.status(), 401, "the admin token is required");

    up.tern_ok(&["kv", "delete", "shared", "greeting"]);
    let e = up.tern_err(&["kv", "get", "shared", "greeting"]);
    assert!(e.contains("no key \"greeting\" in bucket shared"), "{e}");
    assert_eq!(up.get("/kv/exists?b=shared&k=greeting").body, "false");
    let e = up.tern_err(&["kv", "set", "Bad.Bucket", "k", "v"]);
    assert!(e.contains("bucket name \"Bad.Bucket\" is not valid"), "{e}");
}
