import { describe, expect, it } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Console, Effect, Either, Exit, LogLevel, Option } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { everything, version } from "../../src/programs/cli.js"
import { helpFor, runLine } from "../../src/programs/frontDoor.js"
import { splitGlobals } from "../../src/programs/globals.js"
import { names } from "../../src/services/balancer/strategies/Catalog.js"

const { root, helpTree } = await everything()

/** Runs a command line in this process: whether it failed, and what it printed on stdout and stderr. */
const line = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const out: Array<string> = []
    const err: Array<string> = []
    const current = yield* Effect.console
    const captured: Console.Console = {
      ...current,
      log: (...parts) => Effect.sync(() => void out.push(parts.join(" "))),
      error: (...parts) => Effect.sync(() => void err.push(parts.join(" ")))
    }
    const exit = yield* Effect.exit(runLine(root, helpTree, version, args).pipe(Effect.withConsole(captured)))
    return { failed: Exit.isFailure(exit), stdout: out.join("\n"), stderr: err }
  }).pipe(Effect.provide(NodeContext.layer))

/** Fails with exactly one stderr line, `effect-lb: NAME must be …(got …)`. */
const refused = (args: ReadonlyArray<string>, name: string) =>
  Effect.gen(function* () {
    const result = yield* line(args)
    expect(result.failed, args.join(" ")).toBe(true)
    expect(result.stderr, args.join(" ")).toHaveLength(1)
    expect(result.stderr[0], args.join(" ")).toMatch(new RegExp(`^effect-lb: ${name} must be .+ \\(got .*\\)$`))
    return result.stderr[0] ?? ""
  })

describe("one line per mistake", () => {
  it.effect("the cases the issue names: one line naming the option, its rule and the value", () =>
    Effect.gen(function* () {
      expect(yield* refused(["balancer", "--port", "70000"], "--port")).toBe(
        "effect-lb: --port must be an integer from 0 to 65535 (got 70000)"
      )
      const low = yield* refused(["client", "compute", "-5"], "SECONDS")
      const high = yield* refused(["client", "compute", "1e9"], "SECONDS")
      // One rule for compute seconds: the same range whatever was wrong.
      expect(low.replace("(got -5)", "")).toBe(high.replace("(got 1e9)", ""))
      expect(low).toContain("--max-compute")
      yield* refused(["playground", "--servers", "0"], "--servers")
      yield* refused(["playground", "--servers", "51"], "--servers")
      yield* refused(["server", "--weight", "0"], "--weight")
      yield* refused(["playground", "--traffic", "-1"], "--traffic")
      yield* refused(["balancer", "--probe-interval", "abc"], "--probe-interval")
      yield* refused(["balancer", "--dead-after", "0"], "--dead-after")
      yield* refused(["balancer", "--probe-interval", "0s"], "--probe-interval")
      expect(yield* refused(["balancer", "--token", ""], "--token")).toMatch(/\(got an empty value\)$/)
      expect(yield* refused(["playground", "--servers", "2", "--weights", "1,2,3", "--demo", "1"], "--weights")).toBe(
        "effect-lb: --weights must be at most one weight per server, 2 here (got 1,2,3)"
      )
    })
  )

  it.effect("every option of every command has a rule, said the same way", () =>
    Effect.gen(function* () {
      const cases: ReadonlyArray<[ReadonlyArray<string>, string]> = [
        [["balancer", "--host", ""], "--host"],
        [["balancer", "--strategy", "fastest"], "--strategy"],
        [["balancer", "--server", "nowhere"], "--server"],
        [["balancer", "--server", "127.0.0.1:4001:0"], "--server"],
        [["balancer", "--rise", "0"], "--rise"],
        [["balancer", "--fall", "101"], "--fall"],
        [["balancer", "--proxy-port", "-1"], "--proxy-port"],
        [["balancer", "--health", "http"], "--health"],
        [["balancer", "--max-connections", "0"], "--max-connections"],
        [["balancer", "--connect-timeout", "0"], "--connect-timeout"],
        [["balancer", "--proxy-idle-timeout", "0"], "--proxy-idle-timeout"],
        [["balancer", "--drain-timeout", "2h"], "--drain-timeout"],
        [["balancer", "--send-proxy", "v3"], "--send-proxy"],
        [["balancer", "--admin-port", "65536"], "--admin-port"],
        [["balancer", "--admin-host", "a b"], "--admin-host"],
        [["balancer", "--idle-timeout", "0"], "--idle-timeout"],
        [["balancer", "--max-servers", "0"], "--max-servers"],
        [["balancer", "--remove-dead-after", "0"], "--remove-dead-after"],
        [["server", "--port", "x"], "--port"],
        [["server", "--id", ""], "--id"],
        [["server", "--files", "/no/such/folder"], "--files"],
        [["server", "--max-compute", "86401"], "--max-compute"],
        [["server", "--compute-scale", "0"], "--compute-scale"],
        [["server", "--compute-slots", "0"], "--compute-slots"],
        [["server", "--max-connections", "1.5"], "--max-connections"],
        [["server", "--idle-timeout", "0"], "--idle-timeout"],
        [["server", "--drain-timeout", "soon"], "--drain-timeout"],
        [["server", "--balancer", "127.0.0.1"], "--balancer"],
        [["server", "--token", " x"], "--token"],
        [["server", "--advertise-host", ""], "--advertise-host"],
        [["client", "--balancer", "x:0", "list"], "--balancer"],
        [["client", "--read-timeout", "0", "list"], "--read-timeout"],
        [["client", "download", "..", "--out", "."], "NAME"],
        [["client", "download", "x", "--out", "/no/such/folder"], "--out"],
        [["status", "--balancer", ":4000"], "--balancer"],
        [["strategy", "Fastest"], "NAME"],
        [["playground", "--strategy", "x"], "--strategy"],
        [["playground", "--weights", "1,0"], "--weights"],
        [["playground", "--files", "/no/such/folder"], "--files"],
        [["playground", "--port", "-1"], "--port"],
        [["playground", "--admin-port", "x"], "--admin-port"],
        [["playground", "--demo", "0"], "--demo"],
        [["playground", "--probe-interval", "0"], "--probe-interval"],
        [["playground", "--dead-after", "2h"], "--dead-after"],
        [["playground", "--rise", "0"], "--rise"],
        [["playground", "--fall", "0"], "--fall"],
        [["status", "--log-level", "loud"], "--log-level"],
        [["balancer", "--log-format", "xml"], "--log-format"]
      ]
      for (const [args, name] of cases) yield* refused(args, name)
    })
  )

  it.effect("a token is never echoed back", () =>
    Effect.gen(function* () {
      const secret = "s3cret with a space "
      expect(yield* refused(["balancer", "--token", secret], "--token")).not.toContain("s3cret")
    })
  )

  it.effect("parser mistakes are one line with the effect-lb: prefix too", () =>
    Effect.gen(function* () {
      const said = (args: ReadonlyArray<string>) =>
        Effect.map(line(args), (result) => {
          expect(result.failed).toBe(true)
          expect(result.stderr).toHaveLength(1)
          return result.stderr[0] ?? ""
        })
      expect(yield* said(["balancer", "--bogus"])).toBe(
        "effect-lb: unknown option --bogus for effect-lb balancer (see effect-lb balancer --help)"
      )
      expect(yield* said(["balancer", "--port"])).toMatch(/^effect-lb: --port needs a value/)
      expect(yield* said(["bogus"])).toMatch(/^effect-lb: unknown command "bogus" for effect-lb; commands: playground,/)
      expect(yield* said(["client", "bogus"])).toMatch(/^effect-lb: unknown command "bogus" for effect-lb client/)
      expect(yield* said(["strategy"])).toMatch(/^effect-lb: NAME is missing/)
      expect(yield* said(["balancer", "--port", "abc"])).toBe(
        "effect-lb: --port must be an integer from 0 to 65535 (got abc)"
      )
    })
  )

  it.effect("with --json, anywhere on the line, an error is one JSON object", () =>
    Effect.gen(function* () {
      const result = yield* line(["status", "--balancer", "x", "--json"])
      expect(result.stderr).toHaveLength(1)
      expect(JSON.parse(result.stderr[0] ?? "")).toEqual({
        error: {
          _tag: "InvalidOption",
          option: "--balancer",
          message: "--balancer must be host:port, with a port from 1 to 65535 (got x)"
        }
      })
      const argument = yield* line(["--json", "client", "compute", "-5"])
      expect(JSON.parse(argument.stderr[0] ?? "")).toMatchObject({
        error: { _tag: "InvalidArgument", argument: "SECONDS" }
      })
      const usage = yield* line(["client", "list", "--json", "--bogus"])
      expect(JSON.parse(usage.stderr[0] ?? "")).toMatchObject({ error: { _tag: "UsageError" } })
    })
  )
})

describe("global flags anywhere on the line", () => {
  it("takes --log-level, --log-format and --json wherever they are", () => {
    const split = splitGlobals(["client", "list", "--log-level", "debug", "--json", "--log-format=json"])
    expect(Either.isRight(split)).toBe(true)
    if (Either.isLeft(split)) return
    expect(split.right.args).toEqual(["client", "--json", "list"])
    expect(split.right.globals).toEqual({
      logLevel: Option.some(LogLevel.Debug),
      logFormat: "json",
      json: true
    })
  })

  it("moves a subcommand's option given before the subcommand after it: client --out DIR download X", () => {
    const split = splitGlobals(["client", "--out", "/tmp", "--balancer", "h:1", "download", "x"])
    expect(Either.map(split, ({ args }) => args)).toEqual(
      Either.right(["client", "--balancer", "h:1", "download", "--out", "/tmp", "x"])
    )
  })

  it("moves the client's own options given after its request before it: client list --balancer H:P", () => {
    const split = splitGlobals(["client", "compute", "5", "--balancer=h:1", "--read-timeout", "2s"])
    expect(Either.map(split, ({ args }) => args)).toEqual(
      // `--balancer=h:1` is handed to the parser as `--balancer h:1`: the flag may be repeated.
      Either.right(["client", "--balancer", "h:1", "--read-timeout", "2s", "compute", "5"])
    )
  })

  it.live("a bad --balancer after the request is named as such, not as an unknown option", () =>
    Effect.gen(function* () {
      const result = yield* line(["client", "list", "--balancer", "x"])
      expect(result.stderr).toEqual(["effect-lb: --balancer must be host:port, with a port from 1 to 65535 (got x)"])
    })
  )

  it.live("--balancer takes a list, the flag repeated, or both; a bad entry is refused as one address is", () =>
    Effect.gen(function* () {
      const failure = (args: ReadonlyArray<string>) => Effect.map(line(args), (result) => result.stderr)
      expect(yield* failure(["status", "--balancer", "127.0.0.1:1,x"])).toEqual([
        "effect-lb: --balancer must be host:port, with a port from 1 to 65535 (got x)"
      ])
      expect(yield* failure(["strategy", "random", "--balancer=127.0.0.1:1,"])).toEqual([
        'effect-lb: --balancer must be host:port, with a port from 1 to 65535 (got "")'
      ])
      expect(yield* failure(["server", "--balancer", "127.0.0.1:1", "--balancer", "127.0.0.1:70000"])).toEqual([
        "effect-lb: --balancer must be host:port, with a port from 1 to 65535 (got 127.0.0.1:70000)"
      ])
      expect(yield* failure(["status", "--balancer"])).toEqual(["effect-lb: --balancer needs a value: host:port"])
      // Every form at once, an address given twice: each balancer asked once, in order.
      expect(
        yield* failure(["status", "--balancer=127.0.0.1:1,127.0.0.1:2", "--balancer", "127.0.0.1:1,127.0.0.1:3"])
      ).toEqual([
        "effect-lb: no balancer answered: 127.0.0.1:1 (connection refused (ECONNREFUSED)), 127.0.0.1:2 (connection refused (ECONNREFUSED)), 127.0.0.1:3 (connection refused (ECONNREFUSED))"
      ])
    })
  )

  it.live("client --out DIR download X parses (it fails only at the balancer)", () =>
    Effect.gen(function* () {
      const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-out-"))
      const result = yield* line(["client", "--out", folder, "download", "x", "--balancer", "127.0.0.1:1"])
      Fs.rmSync(folder, { recursive: true, force: true })
      expect(result.stderr).toEqual([expect.stringMatching(/^effect-lb: cannot reach the balancer at 127\.0\.0\.1:1/)])
    })
  )
})

describe("help a person can read", () => {
  const pages: ReadonlyArray<ReadonlyArray<string>> = [
    [],
    ["playground"],
    ["balancer"],
    ["server"],
    ["client"],
    ["client", "list"],
    ["client", "download"],
    ["client", "compute"],
    ["status"],
    ["strategy"]
  ]

  it("no line wider than the terminal, no escape codes, a default for every option", () => {
    for (const width of [40, 80, 132]) {
      for (const page of pages) {
        const text = helpFor(helpTree, page, version, width)
        for (const row of text.split("\n"))
          expect(row.length, `${page.join(" ")} at ${width}: ${row}`).toBeLessThanOrEqual(width)
        expect(text).not.toContain("\u001b")
      }
    }
    for (const page of pages) {
      const own = helpFor(helpTree, page, version, 1000).split("Global options")[0] ?? ""
      const options = own.split(/\n(?= {2}--)/).filter((entry) => /^ {2}--/.test(entry))
      for (const option of options) expect(option, page.join(" ")).toMatch(/\[default: /)
    }
  })

  it("shows the defaults, lists the strategies, and does not make --server look required", () => {
    const balancer = helpFor(helpTree, ["balancer"], version, 1000)
    expect(balancer).toMatch(/--port PORT .*\[default: 4000; an integer from 0 to 65535\]/)
    expect(balancer).toMatch(/--server HOST:PORT\[:WEIGHT\]\.\.\.\s+a backend server, repeatable.*\[default: none;/)
    expect(balancer).toContain("effect-lb balancer [options]")
    const strategy = helpFor(helpTree, ["strategy"], version, 1000)
    for (const name of names) expect(strategy).toContain(name)
  })

  it("the top-level command list is short lines", () => {
    const top = helpFor(helpTree, [], version, 80)
    expect(top).toMatch(/^ {2}playground {2,}a balancer/m)
    expect(Math.max(...top.split("\n").map((row) => row.length))).toBeLessThanOrEqual(80)
  })
})
