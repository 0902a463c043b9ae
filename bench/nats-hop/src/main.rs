//! The baseline for bench/cluster.sh: what one HTTP → NATS → responder hop
//! costs with nothing else in the way.
//!
//!   nats-hop responder NATS_URL           # answers "Hello, world!" on bench.hop
//!   nats-hop front NATS_URL LISTEN_ADDR   # HTTP server; each request is a NATS request

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::time::Duration;

const SUBJECT: &str = "bench.hop";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: nats-hop responder NATS_URL | nats-hop front NATS_URL LISTEN_ADDR";
    let (mode, url) = (args.get(1).expect(usage), args.get(2).expect(usage));
    let client = async_nats::connect(url.as_str()).await.expect("connect to NATS");
    match mode.as_str() {
        "responder" => {
            let mut sub = client.queue_subscribe(SUBJECT, "hop".into()).await.unwrap();
            while let Some(msg) = sub.next().await {
                let client = client.clone();
                tokio::spawn(async move {
                    if let Some(reply) = msg.reply {
                        let _ = client.publish(reply, Bytes::from_static(b"Hello, world!\n")).await;
                    }
                });
            }
        }
        "front" => {
            let addr = args.get(3).expect(usage);
            let listener = tokio::net::TcpListener::bind(addr.as_str()).await.unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                let client = client.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let client = client.clone();
                        async move {
                            let body = Bytes::from(req.uri().path().to_string());
                            let request = async_nats::Request::new()
                                .payload(body)
                                .timeout(Some(Duration::from_secs(5)));
                            let resp = match client.send_request(SUBJECT, request).await {
                                Ok(m) => Response::new(Full::new(m.payload)),
                                Err(e) => {
                                    let mut r = Response::new(Full::new(Bytes::from(e.to_string())));
                                    *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                                    r
                                }
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
        _ => panic!("{usage}"),
    }
}
