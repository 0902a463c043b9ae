//! The gateway's route table: request path → function, most specific wins.

use std::collections::HashMap;
use std::sync::Arc;
use tern_protocol::RouteEntry;
use tern_protocol::route::{RoutePattern, Segment};

/// A route with its pattern parsed once, when its table or change arrived:
/// the router is rebuilt on every change, from these.
pub struct Routed {
    pub pattern: RoutePattern,
    /// The pattern's normal form, when it is literals only.
    exact: Option<String>,
    pub entry: RouteEntry,
}

impl Routed {
    /// `None`: a pattern that no longer parses (the scheduler validated it
    /// at deploy), skipped rather than taking routing down.
    pub fn parse(entry: &RouteEntry) -> Option<Arc<Routed>> {
        let Ok(pattern) = RoutePattern::parse(&entry.pattern) else {
            tracing::warn!(pattern = %entry.pattern, "skipping unparsable route");
            return None;
        };
        let exact =
            pattern.segments.iter().all(|s| matches!(s, Segment::Literal(_))).then(|| pattern.normal());
        Some(Arc::new(Routed { pattern, exact, entry: entry.clone() }))
    }
}

#[derive(Default)]
pub struct Router {
    generation: u64,
    /// Patterns made only of literals, by normalised path: most requests
    /// are answered by one hash lookup.
    exact: HashMap<String, Arc<Routed>>,
    patterned: Vec<Arc<Routed>>,
}

impl Router {
    pub fn new<'a>(generation: u64, routes: impl IntoIterator<Item = &'a Arc<Routed>>) -> Self {
        let mut r = Router { generation, ..Default::default() };
        for routed in routes {
            match &routed.exact {
                Some(path) => {
                    // As for patterns below: a duplicate goes to the first name.
                    let slot = r.exact.entry(path.clone()).or_insert_with(|| routed.clone());
                    if routed.entry.function < slot.entry.function {
                        *slot = routed.clone();
                    }
                }
                None => r.patterned.push(routed.clone()),
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
        if let Some(r) = self.exact.get(path) {
            return Some(&r.entry);
        }
        // The scheduler gives one shape to one function, so two matches
        // never tie; a table that has a tie anyway (written by something
        // else) is decided by function name, never by arrival order.
        self.patterned
            .iter()
            .filter(|r| r.pattern.matches(path))
            .max_by(|a, b| {
                a.pattern.specificity_cmp(&b.pattern).then_with(|| b.entry.function.cmp(&a.entry.function))
            })
            .map(|r| &r.entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> Vec<Arc<Routed>> {
        routes
            .iter()
            .filter_map(|(p, f)| {
                Routed::parse(&RouteEntry {
                    pattern: p.to_string(),
                    function: f.to_string(),
                    timeout_ms: 1000,
                    max_body: 1024,
                    max_duration_ms: 1000,
                })
            })
            .collect()
    }

    #[test]
    fn a_tie_is_decided_by_function_name_not_order() {
        for routes in [[("/u/:a", "zed"), ("/u/:b", "abe")], [("/u/:b", "abe"), ("/u/:a", "zed")]] {
            let r = Router::new(1, &table(&routes));
            assert_eq!(r.lookup("/u/1").unwrap().function, "abe");
        }
    }

    #[test]
    fn lookup_prefers_the_most_specific_route() {
        let r = Router::new(
            1,
            &table(&[
                ("/api/*", "catch"),
                ("/api/items/:id", "item"),
                ("/api/items/new", "new"),
                ("/", "root"),
            ]),
        );
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
