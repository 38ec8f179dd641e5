#!/usr/bin/env node
// Runs the compiled command line (built by `npm ci` / `npm run build` into dist/).
import("../dist/src/programs/main.js").catch((error) => {
  console.error("effect-lb: cannot start (" + error.message + "); run `npm run build` first")
  process.exit(1)
})
