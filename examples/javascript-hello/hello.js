// A Tern HTTP function in JavaScript: a plain wasi:http/proxy component
// (componentize-js), no Tern SDK needed. GET /hello?name=NAME; build it with build.sh.
import { ResponseOutparam, OutgoingBody, OutgoingResponse, Fields } from "wasi:http/types@0.2.12";

export const incomingHandler = {
  handle(request, responseOut) {
    const path = request.pathWithQuery() || "/";
    const name = new URLSearchParams(path.split("?")[1] || "").get("name") || "world";
    const response = new OutgoingResponse(Fields.fromList([["content-type", new TextEncoder().encode("text/plain; charset=utf-8")]]));
    response.setStatusCode(200);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: "ok", val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(new TextEncoder().encode(`Hello, ${name}! (from JavaScript)\n`));
    stream[Symbol.dispose]?.();
    OutgoingBody.finish(body);
  },
};
