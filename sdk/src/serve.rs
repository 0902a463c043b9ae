//! Between wasi:http resources and `http` types.

use crate::{IntoResponse, Request, Response, text};
use std::io::{Read, Write};
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme,
};

pub fn serve<R: IntoResponse>(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> R,
) {
    let response = match read_request(request) {
        Ok(req) => handler(req).into_response(),
        Err(e) => text(400, format!("could not read the request: {e}\n")),
    };
    send(out, response);
}

fn method(m: Method) -> Result<http::Method, String> {
    Ok(match m {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Connect => http::Method::CONNECT,
        Method::Options => http::Method::OPTIONS,
        Method::Trace => http::Method::TRACE,
        Method::Patch => http::Method::PATCH,
        Method::Other(s) => http::Method::from_bytes(s.as_bytes()).map_err(|e| e.to_string())?,
    })
}

pub fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let scheme = match request.scheme() {
        Some(Scheme::Https) => "https",
        _ => "http",
    };
    let authority = request.authority().unwrap_or_else(|| "localhost".into());
    let path = request.path_with_query().unwrap_or_else(|| "/".into());
    let mut builder = http::Request::builder()
        .method(method(request.method())?)
        .uri(format!("{scheme}://{authority}{path}"));
    for (name, value) in request.headers().entries() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    let incoming = request.consume().map_err(|_| "request body was already taken")?;
    {
        let mut stream = incoming.stream().map_err(|_| "request body stream was already taken")?;
        stream.read_to_end(&mut body).map_err(|e| e.to_string())?;
    }
    IncomingBody::finish(incoming);
    builder.body(body).map_err(|e| e.to_string())
}

fn send(out: ResponseOutparam, response: Response) {
    let (parts, body) = response.into_parts();
    let entries: Vec<(String, Vec<u8>)> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect();
    let headers = match Fields::from_list(&entries) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("response headers rejected by the host: {e:?}");
            Fields::new()
        }
    };
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(parts.status.as_u16());
    let outgoing = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = outgoing.write().expect("a new body has a stream");
        if let Err(e) = stream.write_all(&body).and_then(|_| Write::flush(&mut stream)) {
            eprintln!("could not write the response body: {e}");
        }
    }
    if let Err(e) = OutgoingBody::finish(outgoing, None) {
        eprintln!("could not finish the response body: {e:?}");
    }
}
