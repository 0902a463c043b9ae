//! Property tests of everything that parses what a client, a guest or a
//! NATS peer sends: random input never panics, and what should round-trip
//! does. Run with the rest of the suite (256 cases each by default).

use bytes::Bytes;
use proptest::prelude::*;
use tern_protocol::route::{self, RoutePattern};
use tern_protocol::{Frame, FunctionSpec, cron, host, nats_subject};

/// Path-like text: slashes, dots, percent escapes, params and stars mixed
/// with ordinary characters, so parsers see their own syntax often.
fn pathish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_string()),
            Just("//".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2F".to_string()),
            Just("%2e".to_string()),
            Just("%".to_string()),
            Just(":".to_string()),
            Just("*".to_string()),
            "[a-z0-9?#@ ]{0,3}",
            any::<char>().prop_map(|c| c.to_string()),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn frames_decode_any_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Frame::<serde_json::Value>::decode(Bytes::from(bytes));
    }

    #[test]
    fn frames_round_trip(header in ".{0,40}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let f = Frame::new(header.clone(), body.clone()).encode();
        let back = Frame::<String>::decode(f).unwrap();
        prop_assert_eq!(back.header, header);
        prop_assert_eq!(&back.body[..], &body[..]);
    }

    #[test]
    fn route_patterns_parse_and_match_anything_without_panicking(pattern in pathish(), path in pathish()) {
        if let Ok(p) = RoutePattern::parse(&pattern) {
            let _ = p.matches(&path);
            let _ = p.captures(&path);
            let _ = p.reaches_admin();
            // The normal form is a pattern with the same shape.
            let again = RoutePattern::parse(&p.normal()).unwrap();
            prop_assert_eq!(again.shape(), p.shape());
            prop_assert_eq!(again.normal(), p.normal());
        }
    }

    #[test]
    fn normal_paths_are_normal(path in pathish()) {
        let once = route::normal_path(&path);
        prop_assert!(once.starts_with('/'));
        prop_assert!(!once.contains("//"));
        prop_assert_eq!(route::normal_path(&once), once.clone(), "normalising twice changes nothing");
        // A route never sees a spelling of the admin API as anything else.
        if route::is_admin_path(&once) {
            prop_assert!(once.starts_with(route::ADMIN_PREFIX));
        }
    }

    #[test]
    fn subjects_are_checked_without_panicking(subject in "[a-z.*>$ _]{0,20}", wild in any::<bool>()) {
        let _ = nats_subject::check(&subject, wild);
        let _ = nats_subject::check_event_subject(&subject);
        let _ = nats_subject::check_trigger(&subject);
    }

    #[test]
    fn a_cover_covers(subjects in proptest::collection::vec("[a-c]{1,2}(\\.[a-c*>]{1,2}){0,2}", 0..6)) {
        let valid: Vec<String> = subjects.into_iter().filter(|s| nats_subject::check_trigger(s).is_ok()).collect();
        let cover = nats_subject::minimal_cover(&valid);
        prop_assert!(cover.len() <= valid.len());
    }

    #[test]
    fn cron_parses_anything_without_panicking(text in "[0-9*/,@a-z -]{0,30}", after in 0u64..4_000_000_000) {
        if let Ok(s) = cron::Schedule::parse(&text)
            && let Some(next) = s.next_after(after)
        {
            prop_assert!(next > after);
        }
    }

    #[test]
    fn hosts_are_checked_without_panicking(value in ".{0,24}") {
        if host::valid(&value) {
            prop_assert!(!value.contains(['/', '?', '#', '@', ' ']));
        }
    }

    #[test]
    fn the_deploy_query_parser_takes_any_pairs(
        pairs in proptest::collection::vec(("[a-z_]{1,12}", ".{0,12}"), 0..8)
    ) {
        if let Ok(spec) = FunctionSpec::from_query("f", &pairs) {
            prop_assert_eq!(spec.name, "f");
        }
    }
}
