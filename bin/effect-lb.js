#!/usr/bin/env node
// Starts the command line that `npm run build` bundles into one file (dist/cli/effect-lb.cjs).
// Compiling its 1 MB of JavaScript would cost ~0.1 s on every start, so the compiled code is
// kept in V8's code cache: Node >= 22.1 keeps it itself (module.enableCompileCache); on Node 20 we
// compile through vm.Script with cachedData, the cache in ~/.cache/effect-lb (XDG_CACHE_HOME), named
// by the bundle's content. Any trouble with the cache only costs the compile. With source maps on
// (NODE_OPTIONS=--enable-source-maps) the bundle is loaded by require, so stack traces show the
// TypeScript sources. See docs/DESIGN.md, "How the command line is built".
"use strict"
const Fs = require("node:fs")
const Module = require("node:module")
const Path = require("node:path")

const bundle = Path.join(__dirname, "..", "dist", "cli", "effect-lb.cjs")

const cacheFolder = () => {
  const base = process.env.XDG_CACHE_HOME || Path.join(require("node:os").homedir(), ".cache")
  return Path.join(base, "effect-lb")
}

const sourceMaps = () =>
  process.sourceMapsEnabled ?? /--enable-source-maps/.test(`${process.execArgv} ${process.env.NODE_OPTIONS}`)

/**
 * Writes the cache by a rename, so a reader never sees half a file, and keeps the few written last:
 * an installed effect-lb and a development checkout each keep theirs.
 */
const saveCache = (folder, name, script) => {
  try {
    Fs.mkdirSync(folder, { recursive: true })
    const temporary = Path.join(folder, `${name}.${process.pid}.tmp`)
    Fs.writeFileSync(temporary, script.createCachedData())
    Fs.renameSync(temporary, Path.join(folder, name))
    const written = (file) => Fs.statSync(Path.join(folder, file)).mtimeMs
    const caches = Fs.readdirSync(folder).filter((file) => file.endsWith(".v8"))
    const older = caches.sort((a, b) => written(b) - written(a)).slice(4)
    for (const file of older) Fs.rmSync(Path.join(folder, file), { force: true })
  } catch {
    // A read-only or full home: start without the cache next time too.
  }
}

/**
 * The bundle's source and its digest, read in 64 KB pieces and left in pieces (V8 joins them when
 * it compiles). Measured on Node 20: compiling a source already flat (read whole, or flattened by
 * hashing the string) left ~15 MB more in the C heap after a first start (`server` 82 MB of RSS
 * instead of 66), and the whole read's buffer and string stayed until a full collection; pieces
 * are young garbage. So the digest is of the bytes: hashing `source` would flatten it.
 * See docs/DESIGN.md, "Memory at start".
 */
const readBundle = () => {
  const hash = require("node:crypto").createHash("sha1")
  const decoder = new (require("node:string_decoder").StringDecoder)("utf8")
  const piece = Buffer.allocUnsafe(64 * 1024)
  const file = Fs.openSync(bundle, "r")
  let source = ""
  try {
    for (let read; (read = Fs.readSync(file, piece, 0, piece.length, null)) > 0;) {
      hash.update(piece.subarray(0, read))
      source += decoder.write(piece.subarray(0, read))
    }
  } finally {
    Fs.closeSync(file)
  }
  return { source: source + decoder.end(), digest: hash.digest("hex").slice(0, 16) }
}

/** The compiled bundle; the code cache read for it is garbage once this returns, before the program runs. */
const compile = () => {
  const Vm = require("node:vm")
  const { source, digest } = readBundle()
  const folder = cacheFolder()
  const name = `effect-lb-${digest}-v8-${process.versions.v8}-${process.arch}.v8`
  let cachedData
  try {
    cachedData = Fs.readFileSync(Path.join(folder, name))
  } catch {
    cachedData = undefined
  }
  // The wrapper sits on its own line (lineOffset -1) so line and column numbers are the bundle's own.
  const wrapped = `(function (exports, require, module, __filename, __dirname) {\n${source}\n})`
  const script = new Vm.Script(wrapped, { filename: bundle, lineOffset: -1, cachedData })
  if (cachedData === undefined || script.cachedDataRejected) {
    // At exit the cache holds every function this run compiled, not only the top level.
    process.once("exit", () => saveCache(folder, name, script))
  }
  return script
}

const runWithCodeCache = () => {
  const module = { exports: {} }
  compile()
    .runInThisContext()
    .call(module.exports, module.exports, Module.createRequire(bundle), module, bundle, Path.dirname(bundle))
}

if (!Fs.existsSync(bundle)) {
  console.error("effect-lb: not built yet; run `npm run build` first")
  process.exit(1)
}
if (typeof Module.enableCompileCache === "function") {
  Module.enableCompileCache(cacheFolder())
  require(bundle)
} else if (sourceMaps()) require(bundle)
else runWithCodeCache()
