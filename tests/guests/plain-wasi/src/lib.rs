//! An HTTP function written against the public `wasi` crate only (no Tern
//! SDK): Tern must serve any plain wasi:http/proxy component unchanged.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Plain;

impl wasi::exports::http::incoming_handler::Guest for Plain {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        // Only when present, so the usual answer stays one line: tests
        // check which credentials reach a function.
        let authorization: Vec<String> = request
            .headers()
            .get(&"authorization".to_string())
            .iter()
            .map(|v| format!("authorization: {}\n", String::from_utf8_lossy(v)))
            .collect();
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap();
        let response = OutgoingResponse::new(headers);
        response.set_status_code(200).unwrap();
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().unwrap();
        let text = format!("plain wasi component saw {path}\n{}", authorization.concat());
        stream.blocking_write_and_flush(text.as_bytes()).unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}

wasi::http::proxy::export!(Plain);
