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

/// `/a//b/` and `/a/b` are the same route.
fn normalise(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
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
                r.exact.insert(normalise(&entry.pattern), entry.clone());
            } else {
                r.patterned.push((pattern, entry.clone()));
            }
        }
        r
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn lookup(&self, path: &str) -> Option<&RouteEntry> {
        // A literal match is always the most specific.
        if let Some(e) = self.exact.get(&normalise(path)) {
            return Some(e);
        }
        self.patterned
            .iter()
            .filter(|(p, _)| p.matches(path))
            .max_by(|a, b| a.0.specificity_cmp(&b.0))
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
                })
                .collect(),
            triggers: Vec::new(),
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
        assert_eq!(f("//api//items/new/"), Some("new"));
        assert_eq!(f("/other"), None);
    }
}
