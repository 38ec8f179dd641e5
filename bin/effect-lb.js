#!/usr/bin/env node
// Runs the compiled command line (built by `npm ci` / `npm run build` into dist/).
import("../dist/src/programs/main.js").catch((error) => {
  const missing = error && error.code === "ERR_MODULE_NOT_FOUND"
  console.error("effect-lb: " + (missing ? "not built yet; run `npm run build` first" : String(error && error.stack)))
  process.exit(1)
})
