//! Route patterns: exact paths, `:param` segments and a trailing `*`.
//!
//! Pure parsing and matching, shared by the scheduler (which validates routes
//! at deploy) and the gateway (which matches requests against them).

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    /// Matches the rest of the path, zero or more segments. Last only.
    Wildcard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    pub segments: Vec<Segment>,
}

impl RoutePattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let rest = pattern.strip_prefix('/').ok_or_else(|| "a route must start with '/'".to_string())?;
        if pattern.contains(['?', '#']) || pattern.chars().any(char::is_whitespace) {
            return Err("a route may not contain '?', '#' or whitespace".into());
        }
        let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if *part == "*" {
                if i + 1 != parts.len() {
                    return Err("'*' may only be the last segment".into());
                }
                Segment::Wildcard
            } else if let Some(name) = part.strip_prefix(':') {
                if name.is_empty() {
                    return Err("a ':' parameter needs a name".into());
                }
                Segment::Param(name.to_string())
            } else if part.contains('*') || part.contains(':') {
                return Err(format!("segment {part:?}: '*' and ':' must stand alone"));
            } else {
                Segment::Literal(part.to_string())
            };
            segments.push(seg);
        }
        Ok(RoutePattern { segments })
    }

    /// Whether `path` (without query) matches this pattern.
    pub fn matches(&self, path: &str) -> bool {
        self.captures(path).is_some()
    }

    /// The `:param` values (and `*` as the rest of the path) if `path`
    /// matches.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let mut parts = path.split('/').filter(|s| !s.is_empty());
        let mut out = Vec::new();
        for seg in &self.segments {
            match seg {
                Segment::Wildcard => {
                    // The rest of the path as the client sent it.
                    let rest = match parts.next() {
                        Some(first) => {
                            let start = first.as_ptr() as usize - path.as_ptr() as usize;
                            path[start..].trim_end_matches('/')
                        }
                        None => "",
                    };
                    out.push(("*", rest));
                    return Some(out);
                }
                Segment::Literal(l) => match parts.next() {
                    Some(p) if p == l => {}
                    _ => return None,
                },
                Segment::Param(name) => out.push((name.as_str(), parts.next()?)),
            }
        }
        parts.next().is_none().then_some(out)
    }

    /// Orders two patterns that both match one path: the greater is more
    /// specific. Segment by segment, a literal beats a parameter, which beats
    /// the end of an exact pattern, which beats a wildcard.
    pub fn specificity_cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }

    fn rank(&self) -> Vec<u8> {
        let mut r: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 3,
                Segment::Param(_) => 2,
                Segment::Wildcard => 0,
            })
            .collect();
        if !matches!(self.segments.last(), Some(Segment::Wildcard)) {
            r.push(1);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    #[test]
    fn parse_rejects_malformed_patterns() {
        for bad in ["", "hello", "/a/*/b", "/a/:", "/a/b*", "/a?x=1", "/a b"] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(p("/").segments, vec![]);
    }

    #[test]
    fn matching() {
        assert!(p("/hello").matches("/hello"));
        assert!(p("/hello").matches("/hello/"));
        assert!(!p("/hello").matches("/hello/x"));
        assert!(p("/users/:id").matches("/users/42"));
        assert!(!p("/users/:id").matches("/users"));
        assert!(p("/static/*").matches("/static"));
        assert!(p("/static/*").matches("/static/a/b.css"));
        assert!(p("/*").matches("/anything/at/all"));
        assert!(p("/").matches("/"));
        assert!(!p("/").matches("/x"));
    }

    #[test]
    fn captures_params_and_rest() {
        assert_eq!(p("/u/:id/p/:post").captures("/u/7/p/x"), Some(vec![("id", "7"), ("post", "x")]));
        assert_eq!(p("/files/*").captures("/files/a/b.txt"), Some(vec![("*", "a/b.txt")]));
        assert_eq!(p("/files/*").captures("/files"), Some(vec![("*", "")]));
        assert_eq!(p("/u/:id").captures("/v/7"), None);
    }

    #[test]
    fn most_specific_wins() {
        let most = |path: &str, pats: &[&str]| -> String {
            pats.iter()
                .map(|s| (s, p(s)))
                .filter(|(_, rp)| rp.matches(path))
                .max_by(|a, b| a.1.specificity_cmp(&b.1))
                .map(|(s, _)| s.to_string())
                .unwrap()
        };
        let pats = ["/*", "/users/*", "/users/:id", "/users/me", "/users"];
        assert_eq!(most("/users/me", &pats), "/users/me");
        assert_eq!(most("/users/7", &pats), "/users/:id");
        assert_eq!(most("/users/7/posts", &pats), "/users/*");
        assert_eq!(most("/users", &pats), "/users");
        assert_eq!(most("/other", &pats), "/*");
    }
}
