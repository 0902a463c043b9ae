#!/usr/bin/env bash
# Builds hello.js into a wasi:http/proxy component with componentize-js
# (pinned in package.json):
#
#   examples/javascript-hello/build.sh [OUT.wasm]   # default: hello_js.wasm here
#   tern deploy hello_js.wasm --name hello-js --route /hello
#
# Needs Node.js 18+ and the npm registry (or npm's cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/hello_js.wasm}")"
cd "$here"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm ci --silent --no-audit --no-fund
node build.mjs "$out"
