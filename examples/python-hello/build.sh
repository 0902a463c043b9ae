#!/usr/bin/env bash
# Builds app.py into a wasi:http/proxy component with componentize-py
# (pinned), in a virtualenv of its own:
#
#   examples/python-hello/build.sh [OUT.wasm]   # default: hello_py.wasm here
#   tern deploy hello_py.wasm --name hello-py --route /hello
#
# Needs Python 3.9+ and PyPI (or a pip cache). The bindings for the WIT in
# examples/wit/wasi-http are generated into a build directory, not kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/hello_py.wasm}")"
COMPONENTIZE_PY_VERSION=0.25.1
build="${TERN_EXAMPLE_BUILD:-$here/.build}"
mkdir -p "$build"
if ! "$build/venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
  python3 -m venv "$build/venv"
  "$build/venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
cp "$here/app.py" "$build/"
cd "$build"
"$build/venv/bin/componentize-py" -d "$here/../wit/wasi-http" -w tern:examples/http componentize app -o "$out"
