// Builds hello.js into a wasi:http/proxy component (componentize-js,
// pinned in package.json): node build.mjs [OUT.wasm]
import { componentize } from "@bytecodealliance/componentize-js";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "hello_js.wasm"));
const { component } = await componentize(await readFile(join(here, "hello.js"), "utf8"), {
  witPath: join(here, "..", "wit", "wasi-http"),
  worldName: "tern:examples/http",
  // It needs none of these: the component imports less.
  disableFeatures: ["stdio", "random", "clocks"],
});
await writeFile(out, component);
