//! Route patterns (exact paths, `:param` segments and a trailing `*`) and
//! request paths, in one normal form.
//!
//! Pure parsing and matching, shared by the scheduler (which validates and
//! normalises routes at deploy, and refuses one that would take another
//! function's requests) and the gateway (which normalises each request's
//! path once, decides admin API or function on it, routes on it, and hands
//! the function exactly that path).

use std::cmp::Ordering;

/// Where the admin API lives; no function route may reach under it.
pub const ADMIN_PREFIX: &str = "/api/v1";

/// A request path in normal form: `%2F` and `%2E` decoded (they are `/`
/// and `.` to anyone downstream), empty and `.` segments dropped, `..`
/// removing the segment before it (never above the root), no trailing
/// slash. `//api/v1/x`, `/api%2Fv1/x` and `/a/../api/v1/x` all become
/// `/api/v1/x`. Other escapes are left as they are.
pub fn normal_path(raw: &str) -> String {
    let decoded = decode_slashes_and_dots(raw);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn decode_slashes_and_dots(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('%') {
        return raw.into();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match code.as_deref() {
            Some("2F") => out.push('/'),
            Some("2E") => out.push('.'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out.into()
}

/// Whether a normal path is the admin API's.
pub fn is_admin_path(normal: &str) -> bool {
    under(normal, ADMIN_PREFIX)
}

/// The gateway's own metrics endpoint: Prometheus scrapes it.
pub const METRICS_PATH: &str = "/metrics";
/// The gateway's dashboard and its assets.
pub const UI_PREFIX: &str = "/ui";

fn under(normal: &str, prefix: &str) -> bool {
    normal == prefix || normal.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
}

/// Whether a normal path is the dashboard's (`/ui` and under it).
pub fn is_ui_path(normal: &str) -> bool {
    under(normal, UI_PREFIX)
}

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

    /// The pattern in normal form: single slashes, no trailing slash.
    /// What the registry stores and `tern describe` shows.
    pub fn normal(&self) -> String {
        self.render(true)
    }

    /// The set of paths the pattern matches, as a string: the normal form
    /// without parameter names (`/users/:id` and `/users/:zz` are both
    /// `/users/:`). Two patterns match the same requests exactly when their
    /// shapes are equal, and only then can they tie on specificity, so
    /// one shape belongs to one function.
    pub fn shape(&self) -> String {
        self.render(false)
    }

    fn render(&self, names: bool) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(n) => {
                    out.push(':');
                    if names {
                        out.push_str(n);
                    }
                }
                Segment::Wildcard => out.push('*'),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Whether the pattern names a path the gateway keeps for itself,
    /// literally: [`METRICS_PATH`], or [`UI_PREFIX`] and under it. (As for
    /// the admin API, `/*` and `/:x` are allowed: the gateway decides its
    /// own paths first.)
    pub fn reaches_gateway(&self) -> bool {
        let literal = |i: usize, s: &str| matches!(self.segments.get(i), Some(Segment::Literal(l)) if l == s);
        (literal(0, "metrics") && self.segments.len() == 1) || literal(0, "ui") || self.reaches_admin()
    }

    /// Whether the pattern names the admin API's space: its first segment
    /// is the literal `api` and it could match a path under
    /// [`ADMIN_PREFIX`]. (A pattern that starts with a parameter or `*`,
    /// like `/*`, is allowed: the admin API is decided first, so it never
    /// gets those requests.)
    pub fn reaches_admin(&self) -> bool {
        // Whatever follows, some path under /api/v1 matches it.
        let v1 = ADMIN_PREFIX.trim_start_matches("/api/");
        matches!(self.segments.first(), Some(Segment::Literal(l)) if l == "api")
            && match self.segments.get(1) {
                Some(Segment::Literal(l)) => l == v1,
                Some(Segment::Param(_) | Segment::Wildcard) => true,
                None => false,
            }
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
    fn paths_normalise_so_no_spelling_reaches_another_route() {
        for raw in [
            "//api/v1/functions",
            "/api%2Fv1/functions",
            "/api%2fv1%2Ffunctions/",
            "/./api/./v1//functions",
            "/x/../api/v1/functions",
            "/%2e%2e/api/v1/functions",
            "/../../api/v1/functions",
        ] {
            assert_eq!(normal_path(raw), "/api/v1/functions", "{raw}");
            assert!(is_admin_path(&normal_path(raw)));
        }
        assert_eq!(normal_path(""), "/");
        assert_eq!(normal_path("/a%20b/%zz/%"), "/a%20b/%zz/%", "other escapes stay");
        assert!(!is_admin_path("/api/v10"));
        assert!(is_admin_path("/api/v1"));
    }

    #[test]
    fn one_shape_per_set_of_paths() {
        assert_eq!(p("/hello/").shape(), p("/hello").shape());
        assert_eq!(p("/users/:zz").shape(), p("/users/:id").shape());
        assert_eq!(p("/static//*").shape(), p("/static/*").shape());
        assert_ne!(p("/users/:id").shape(), p("/users/me").shape());
        assert_eq!(p("//users//:id/").normal(), "/users/:id");
        assert_eq!(p("/").normal(), "/");
    }

    #[test]
    fn routes_under_the_admin_api_are_recognised() {
        for r in ["/api/v1", "/api/v1/*", "/api/*", "/api/:version/functions", "/api/:v"] {
            assert!(p(r).reaches_admin(), "{r}");
        }
        for r in ["/*", "/api/greet/:name", "/api/info/*", "/apiv1", "/:a/:b"] {
            assert!(!p(r).reaches_admin(), "{r}");
        }
        for r in ["/metrics", "/ui", "/ui/*", "/ui/x", "/api/v1/*"] {
            assert!(p(r).reaches_gateway(), "{r}");
        }
        for r in ["/metrics/x", "/uix", "/*", "/:a", "/app/metrics"] {
            assert!(!p(r).reaches_gateway(), "{r}");
        }
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
