//! The deploy spec as URL query parameters, for curl users:
//! `POST /api/v1/functions/NAME/versions?route=/a&env=K=V&memory_mib=64`.
//!
//! There is no list of parameters here. A parameter is a [`FunctionSpec`]
//! field by its serde name, and its kind comes from the field's default
//! value: a list field takes repeats, a map field takes `KEY=VALUE`, a
//! number field takes a number, anything else takes text. So a new spec
//! field is a new parameter with no change here, and the JSON spec (what
//! the CLI sends) and the query form cannot drift apart.

use crate::FunctionSpec;
use serde_json::{Map, Value};

/// Query names as the CLI spells its flags (`route=` for `routes`,
/// `secret=` for `secrets`).
const ALIASES: &[(&str, &str)] = &[("route", "routes"), ("secret", "secrets")];

impl FunctionSpec {
    /// Builds a spec for `name` from query pairs, defaults for the rest.
    /// Unknown parameters, malformed values and out-of-range numbers are
    /// errors that name the parameter.
    pub fn from_query(name: &str, pairs: &[(String, String)]) -> Result<FunctionSpec, String> {
        let defaults = match serde_json::to_value(FunctionSpec::new(name)) {
            Ok(Value::Object(m)) => m,
            _ => unreachable!("a spec serialises to an object"),
        };
        let mut given = Map::new();
        for (key, value) in pairs {
            let field = ALIASES.iter().find(|(a, _)| a == key).map_or(key.as_str(), |(_, f)| f);
            let kind = match defaults.get(field) {
                Some(kind) if field != "name" => kind,
                _ => return Err(format!("unknown deploy parameter {key:?}")),
            };
            let slot = given.entry(field.to_string()).or_insert_with(|| match kind {
                Value::Array(_) => Value::Array(Vec::new()),
                Value::Object(_) => Value::Object(Map::new()),
                _ => Value::Null,
            });
            match (kind, slot) {
                (Value::Array(_), Value::Array(list)) => list.push(Value::String(value.clone())),
                (Value::Object(_), Value::Object(map)) => {
                    let (k, v) =
                        value.split_once('=').ok_or_else(|| format!("{key} {value:?} must be KEY=VALUE"))?;
                    map.insert(k.to_string(), Value::String(v.to_string()));
                }
                (Value::Number(_), slot) => {
                    let n: u64 = value.parse().map_err(|_| format!("{key}={value:?} is not a number"))?;
                    *slot = Value::from(n);
                }
                (_, slot) => *slot = Value::String(value.clone()),
            }
        }
        // serde's error does not say which field: try them one at a time.
        for (field, value) in &given {
            let mut one = defaults.clone();
            one.insert(field.clone(), value.clone());
            if let Err(e) = serde_json::from_value::<FunctionSpec>(Value::Object(one)) {
                return Err(format!("deploy parameter {field}: {e}"));
            }
        }
        let mut spec = defaults;
        spec.extend(given);
        serde_json::from_value(Value::Object(spec)).map_err(|e| format!("deploy parameters: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_kind_of_field_is_read() {
        let s = FunctionSpec::from_query(
            "f",
            &q(&[
                ("route", "/a"),
                ("route", "/b/:id"),
                ("env", "GREETING=hej=1"),
                ("memory_mib", "64"),
                ("timeout_ms", "2500"),
                ("schedule", "@hourly"),
                ("node_selector", "zone=a"),
                ("on_event", "orders.>"),
            ]),
        )
        .unwrap();
        assert_eq!(s.name, "f");
        assert_eq!(s.routes, vec!["/a", "/b/:id"]);
        assert_eq!(s.env["GREETING"], "hej=1");
        assert_eq!((s.memory_mib, s.timeout_ms), (64, 2500));
        assert_eq!(s.schedule.as_deref(), Some("@hourly"));
        assert_eq!(s.node_selector["zone"], "a");
        assert_eq!(s.on_event, vec!["orders.>"]);
        assert_eq!(s.concurrency, crate::DEFAULT_CONCURRENCY, "defaults for the rest");
    }

    #[test]
    fn the_query_form_and_the_json_form_agree() {
        let mut spec = FunctionSpec::new("g");
        spec.routes = vec!["/x".into()];
        spec.env.insert("K".into(), "V".into());
        spec.min_scale = 2;
        spec.idle_ms = 5_000;
        let from_query = FunctionSpec::from_query(
            "g",
            &q(&[("routes", "/x"), ("env", "K=V"), ("min_scale", "2"), ("idle_ms", "5000")]),
        );
        assert_eq!(from_query, Ok(spec));
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = |pairs: &[(&str, &str)]| FunctionSpec::from_query("f", &q(pairs)).unwrap_err();
        assert!(err(&[("colour", "red")]).contains("\"colour\""));
        assert!(err(&[("name", "other")]).contains("unknown deploy parameter"));
        assert!(err(&[("memory_mib", "lots")]).contains("memory_mib=\"lots\" is not a number"));
        assert!(err(&[("memory_mib", "99999999999")]).contains("memory_mib"));
        assert!(err(&[("env", "novalue")]).contains("KEY=VALUE"));
    }
}
