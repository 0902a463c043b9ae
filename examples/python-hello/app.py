"""A Tern HTTP function in Python: a plain wasi:http/proxy component
(componentize-py), no Tern SDK needed. GET /hello?name=NAME; build it with build.sh."""

from urllib.parse import parse_qs, urlparse

from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from componentize_py_types import Ok


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        query = parse_qs(urlparse(request.path_with_query() or "/").query)
        name = query.get("name", ["world"])[0]
        body = f"Hello, {name}! (from Python)\n".encode()
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain; charset=utf-8")]))
        response.set_status_code(200)
        out = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = out.write()
        stream.blocking_write_and_flush(body)
        stream.__exit__(None, None, None)
        OutgoingBody.finish(out, None)
