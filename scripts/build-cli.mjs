// Bundles the command line into dist/cli/effect-lb.cjs (what bin/effect-lb.js runs); see
// docs/DESIGN.md, "How the command line is built".
import * as esbuild from "esbuild"
import * as Fs from "node:fs/promises"

/**
 * `import { Effect, Layer } from "effect"` becomes `import * as Effect from "effect/Effect"` (and so
 * for @effect/cli): the bundle loads programs lazily, so esbuild keeps every module as a unit that
 * runs when first imported — through a package's index, that would be every module of the package.
 */
const namespaceImports = {
  name: "namespace-imports",
  setup(build) {
    build.onLoad({ filter: /\/src\/.*\.ts$/ }, async (args) => {
      const source = await Fs.readFile(args.path, "utf8")
      const contents = source.replace(
        /import\s*\{([^}]*)\}\s*from\s*"(effect|@effect\/cli)"/g,
        (match, names, pkg) =>
          names
            .split(",")
            .map((name) => name.trim())
            .filter((name) => name !== "")
            .map((name) => {
              const [, type, imported, alias] = /^(type\s+)?(\w+)(?:\s+as\s+(\w+))?$/.exec(name) ?? []
              if (imported === undefined || !/^[A-Z]/.test(imported))
                throw new Error(`${args.path}: cannot rewrite "${name}"`)
              return `import ${type ?? ""}* as ${alias ?? imported} from "${pkg}/${imported}"`
            })
            .join("; ") + "\n".repeat(match.split("\n").length - 1) // the lines below keep their numbers
      )
      return { contents, loader: "ts" }
    })
  }
}

/**
 * `ws` (WebSockets) is imported at the top of @effect/platform-node's socket modules, for functions
 * we never call; it has no side effects of its own, and told so, esbuild drops those imports and a
 * `server` or a balancer without --admin-port does not load it, nor node:http, https and zlib with
 * it (~1 MB of RSS; the admin's HTTP server still uses it). See docs/DESIGN.md, "Memory at start".
 */
const wsWithoutSideEffects = {
  name: "ws-without-side-effects",
  setup(build) {
    build.onResolve({ filter: /^ws$/ }, async (args) => {
      if (args.pluginData === "ws") return undefined
      const resolved = await build.resolve(args.path, {
        kind: args.kind,
        resolveDir: args.resolveDir,
        pluginData: "ws"
      })
      return { ...resolved, sideEffects: false }
    })
  }
}

await esbuild.build({
  entryPoints: ["src/programs/main.ts"],
  outfile: "dist/cli/effect-lb.cjs",
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
  plugins: [namespaceImports, wsWithoutSideEffects],
  // The bundle is CommonJS (V8's code cache works for scripts, not ES modules, on Node 20).
  define: { "import.meta.url": "__importMetaUrl" },
  banner: { js: "var __importMetaUrl=require('node:url').pathToFileURL(__filename).href;" }
})
