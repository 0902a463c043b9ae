//! Functions in Python and JavaScript: the examples, built with
//! componentize-py and componentize-js (pinned), are plain wasi:http/proxy
//! components and serve correct answers under concurrent load, with a
//! fresh instance per request and with `--instance-reuse`.

use tern_tests::polyglot::polyglot_example;
use tern_tests::{TernUp, burst};

#[test]
fn python_and_javascript_functions_serve_under_load() {
    let (_dir, up) = TernUp::start_temp();
    let mut served = 0;
    for (example, name, language) in
        [("python-hello", "py", "Python"), ("javascript-hello", "js", "JavaScript")]
    {
        let wasm = match polyglot_example(example) {
            Ok(w) => w,
            Err(why) => {
                eprintln!("SKIPPED {example}: {why}");
                continue;
            }
        };
        for (suffix, flags) in [("", &[][..]), ("-reuse", &["--instance-reuse", "50"][..])] {
            let (name, route) = (format!("{name}{suffix}"), format!("/{name}{suffix}/hello"));
            let mut args = vec!["--route", route.as_str()];
            args.extend_from_slice(flags);
            up.deploy(&wasm, &name, &args);
            let one = up.get(&format!("{route}?name=Ada"));
            assert_eq!(
                (one.status, one.body.as_str()),
                (200, format!("Hello, Ada! (from {language})\n").as_str())
            );
            // 32 at once, four times over, each answer its own request's.
            for round in 0..4 {
                let url = format!("{}{route}?name=load{round}", up.url);
                for (status, body, _) in burst(&url, 32) {
                    assert_eq!(status, 200, "{name}: {body}");
                    assert_eq!(body, format!("Hello, load{round}! (from {language})\n"), "{name}");
                }
            }
        }
        served += 1;
    }
    if served == 0 {
        // Only when neither PyPI nor npm can be reached (see SKIPPED above).
        eprintln!("SKIPPED: no Python or JavaScript toolchain could be fetched");
    }
}
