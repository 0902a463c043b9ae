//! `GET /metrics` on an address of its own (`--metrics-listen`), for the
//! roles that serve no HTTP otherwise (scheduler, worker). The gateway
//! answers `/metrics` on its own listener with [`response`].

use crate::{Format, Metrics};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The answer to a scrape with `accept` as its Accept header.
pub fn response(metrics: &Metrics, accept: Option<&str>) -> Response<Full<Bytes>> {
    let format = Format::from_accept(accept);
    match metrics.render(format) {
        Some(text) => Response::builder()
            .header(http::header::CONTENT_TYPE, format.content_type())
            .body(Full::new(Bytes::from(text)))
            .expect("a valid response"),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"metrics are off (--no-metrics)\n")))
            .expect("a valid response"),
    }
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let r = if req.uri().path() == "/metrics" {
                        let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
                        response(&metrics, accept)
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"only /metrics is served here\n")))
                            .expect("a valid response")
                    };
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}
