//! `POST /pub/{subject}`: publishes the body as an event on `subject`, with
//! the header `source: publisher`. Answers the event id (200), or the
//! error: 403 denied, 400 invalid, 404 unrouted, 503 unavailable.

use tern_sdk::publish::{PublishError, publish_with_headers};
use tern_sdk::{Request, Response, text};

fn handle(req: Request) -> Response {
    let subject = req.uri().path().trim_start_matches("/pub/").to_string();
    let headers = [("source".to_string(), "publisher".to_string())];
    match publish_with_headers(&subject, req.body(), &headers) {
        Ok(id) => text(200, id),
        Err(e) => {
            let status = match e {
                PublishError::Denied(_) => 403,
                PublishError::Invalid(_) => 400,
                PublishError::Unrouted(_) => 404,
                PublishError::Unavailable(_) => 503,
            };
            text(status, e.to_string())
        }
    }
}

tern_sdk::http_function!(handle);
