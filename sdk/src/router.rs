//! Several routes in one function, matched by the gateway's own rules.

use crate::{IntoResponse, Request, Response, text};
use tern_protocol::route::RoutePattern;

/// Path parameters of the matched route: `:name` segments, and `*` for the
/// rest of the path under a trailing wildcard.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

type Handler = Box<dyn Fn(Request, Params) -> Response>;

/// ```ignore
/// fn handle(req: Request) -> Response {
///     Router::new()
///         .get("/users/:id", |_req, p| format!("user {}", p.get("id").unwrap()))
///         .handle(req)
/// }
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<(http::Method, RoutePattern, Handler)>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Panics on a malformed pattern: that is a bug in the
    /// function, found the first time it runs.
    pub fn route<R: IntoResponse>(
        mut self,
        method: http::Method,
        pattern: &str,
        handler: impl Fn(Request, Params) -> R + 'static,
    ) -> Self {
        let parsed = RoutePattern::parse(pattern).unwrap_or_else(|e| panic!("route {pattern:?}: {e}"));
        self.routes.push((method, parsed, Box::new(move |req, p| handler(req, p).into_response())));
        self
    }

    pub fn get<R: IntoResponse>(self, pattern: &str, h: impl Fn(Request, Params) -> R + 'static) -> Self {
        self.route(http::Method::GET, pattern, h)
    }

    pub fn post<R: IntoResponse>(self, pattern: &str, h: impl Fn(Request, Params) -> R + 'static) -> Self {
        self.route(http::Method::POST, pattern, h)
    }

    pub fn put<R: IntoResponse>(self, pattern: &str, h: impl Fn(Request, Params) -> R + 'static) -> Self {
        self.route(http::Method::PUT, pattern, h)
    }

    pub fn delete<R: IntoResponse>(self, pattern: &str, h: impl Fn(Request, Params) -> R + 'static) -> Self {
        self.route(http::Method::DELETE, pattern, h)
    }

    /// Runs the most specific matching route; 404 if no path matches, 405 if
    /// the path matches under other methods only.
    pub fn handle(&self, req: Request) -> Response {
        let path = req.uri().path().to_string();
        let mut best: Option<(&RoutePattern, &Handler, Params)> = None;
        let mut path_matched = false;
        for (method, pattern, handler) in &self.routes {
            let Some(caps) = pattern.captures(&path) else {
                continue;
            };
            path_matched = true;
            if method != req.method() {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _, _)| pattern.specificity_cmp(b).is_gt()) {
                let params = Params(caps.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
                best = Some((pattern, handler, params));
            }
        }
        match best {
            Some((_, handler, params)) => handler(req, params),
            None if path_matched => text(405, format!("{} is not allowed on {path}\n", req.method())),
            None => text(404, format!("nothing at {path}\n")),
        }
    }
}
