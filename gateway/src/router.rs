//! The gateway's route table: request path → function, most specific wins.

use std::collections::HashMap;
use tern_protocol::route::{RoutePattern, Segment};
use tern_protocol::{RouteEntry, ServingTable};

#[derive(Default)]
pub struct Router {
    generation: u64,
    /// Patterns made only of literals, by normalised path: most requests
    /// are answered by one hash lookup.
    exact: HashMap<String, RouteEntry>,
    patterned: Vec<(RoutePattern, RouteEntry)>,
}

impl Router {
    pub fn new(table: &ServingTable) -> Self {
        let mut r = Router { generation: table.generation, ..Default::default() };
        for entry in &table.routes {
            // The scheduler validated every pattern at deploy; one that no
            // longer parses is skipped rather than taking routing down.
            let Ok(pattern) = RoutePattern::parse(&entry.pattern) else {
                tracing::warn!(pattern = %entry.pattern, "skipping unparsable route");
                continue;
            };
            if pattern.segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
                // As for patterns below: a duplicate goes to the first name.
                let slot = r.exact.entry(pattern.normal()).or_insert_with(|| entry.clone());
                if entry.function < slot.function {
                    *slot = entry.clone();
                }
            } else {
                r.patterned.push((pattern, entry.clone()));
            }
        }
        r
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The route for a path in normal form (`route::normal_path`).
    pub fn lookup(&self, path: &str) -> Option<&RouteEntry> {
        // A literal match is always the most specific.
        if let Some(e) = self.exact.get(path) {
            return Some(e);
        }
        // The scheduler gives one shape to one function, so two matches
        // never tie; a table that has a tie anyway (written by something
        // else) is decided by function name, never by arrival order.
        self.patterned
            .iter()
            .filter(|(p, _)| p.matches(path))
            .max_by(|a, b| a.0.specificity_cmp(&b.0).then_with(|| b.1.function.cmp(&a.1.function)))
            .map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> ServingTable {
        ServingTable {
            generation: 1,
            routes: routes
                .iter()
                .map(|(p, f)| RouteEntry {
                    pattern: p.to_string(),
                    function: f.to_string(),
                    timeout_ms: 1000,
                    max_body: 1024,
                    max_duration_ms: 1000,
                })
                .collect(),
            triggers: Vec::new(),
        }
    }

    #[test]
    fn a_tie_is_decided_by_function_name_not_order() {
        for routes in [[("/u/:a", "zed"), ("/u/:b", "abe")], [("/u/:b", "abe"), ("/u/:a", "zed")]] {
            let r = Router::new(&table(&routes));
            assert_eq!(r.lookup("/u/1").unwrap().function, "abe");
        }
    }

    #[test]
    fn lookup_prefers_the_most_specific_route() {
        let r = Router::new(&table(&[
            ("/api/*", "catch"),
            ("/api/items/:id", "item"),
            ("/api/items/new", "new"),
            ("/", "root"),
        ]));
        let f = |p: &str| r.lookup(p).map(|e| e.function.as_str());
        assert_eq!(f("/api/items/new"), Some("new"));
        assert_eq!(f("/api/items/7"), Some("item"));
        assert_eq!(f("/api/items/7/x"), Some("catch"));
        assert_eq!(f("/api"), Some("catch"));
        assert_eq!(f("/"), Some("root"));
        assert_eq!(f(&tern_protocol::route::normal_path("//api//items/new/")), Some("new"));
        assert_eq!(f("/other"), None);
    }
}
