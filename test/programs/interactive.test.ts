import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, TestClock, TestServices } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { ServerRequest } from "../../src/domain/Protocol.js"
import { Host, Port, ServerId, Weight } from "../../src/domain/Server.js"
import { interactive } from "../../src/programs/interactive.js"
import * as Client from "../../src/services/client/Client.js"
import * as ControlPlane from "../../src/services/balancer/ControlPlane.js"
import { ServerRegistry } from "../../src/services/balancer/ServerRegistry.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { balancerLayer } from "../support/balancer.js"
import { servedFolder } from "../support/fixtures.js"
import { startServer } from "../support/server.js"
import * as TestTerminal from "../support/terminal.js"
import { backspace, down, enter, type } from "../support/terminal.js"

/** File system and paths, but not Node's terminal: the test's own terminal must be the one used. */
const files = Layer.merge(NodeFileSystem.layer, NodePath.layer)

const plane = ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(Layer.provideMerge(balancerLayer()))

/** Runs the menu against a balancer with one real server (in memory), fed `keys`; returns what it showed. */
const session = (
  keys: ReadonlyArray<Parameters<typeof TestTerminal.layer>[0][number]>,
  existing: Record<string, string> = {}
) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const { address } = yield* ControlPlane.ControlPlane
    const folder = yield* servedFolder(2048)
    const server = yield* startServer(folder.root)
    yield* registry.add({
      id: ServerId.make("s1"),
      host: Host.make("127.0.0.1"),
      port: Port.make(server.address.port),
      weight: Weight.make(1)
    })
    const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-menu-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(out, { recursive: true, force: true })))
    for (const [name, content] of Object.entries(existing)) Fs.writeFileSync(Path.join(out, name), content)
    const shown: Array<string> = []
    yield* interactive({ balancer: address, out }).pipe(
      Effect.provide(Client.layer({ ...Client.defaults, balancer: address }).pipe(Layer.provideMerge(files))),
      Effect.provide(TestTerminal.layer(keys, shown))
    )
    return { text: TestTerminal.plain(shown), out, big: folder.big }
  }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))

describe("the interactive client", () => {
  it.scopedLive("lists files, shows which server answered, and quits at the end of input", () =>
    Effect.gen(function* () {
      const { text } = yield* session([enter])
      expect(text).toContain("What next?")
      expect(text).toMatch(/4 files on s1 \(127\.0\.0\.1:\d+\)/)
      expect(text).toContain("notes.txt  (txt, 16 B)")
      expect(text).toContain("big.bin  (bin, 2.0 KiB)")
    })
  )

  it.scopedLive("downloads a file picked from the list into the output folder", () =>
    Effect.gen(function* () {
      // Download a file → the list is alias.txt, big.bin, empty, notes.txt → big.bin.
      const { text, out, big } = yield* session([down, enter, down, enter])
      expect(text).toMatch(/saved .*big\.bin \(2\.0 KiB\) from s1/)
      expect(text).toMatch(/big\.bin: 100% \(2\.0 KiB of 2\.0 KiB, /)
      expect(Fs.readFileSync(Path.join(out, "big.bin")).equals(big)).toBe(true)
    })
  )

  it.scopedLive("asks before replacing a file already in the folder: no (the default) keeps it", () =>
    Effect.gen(function* () {
      const { text, out } = yield* session([down, enter, down, enter, enter], { "big.bin": "mine" })
      expect(text).toMatch(/big\.bin exists in \S+; overwrite it\?/)
      expect(text).toContain("kept the existing big.bin; nothing downloaded")
      expect(Fs.readFileSync(Path.join(out, "big.bin"), "utf8")).toBe("mine")
    })
  )

  it.scopedLive("asks before replacing a file already in the folder: yes replaces it", () =>
    Effect.gen(function* () {
      const { text, out, big } = yield* session([down, enter, down, enter, ...type("y"), enter], {
        "big.bin": "mine"
      })
      expect(text).toMatch(/saved .*big\.bin \(2\.0 KiB\) from s1/)
      expect(Fs.readFileSync(Path.join(out, "big.bin")).equals(big)).toBe(true)
    })
  )

  it.scopedLive("computes, re-asking when the seconds are out of range or not a number", () =>
    Effect.gen(function* () {
      const { text } = yield* session([
        ...[down, down, enter],
        ...[...type("99"), enter],
        ...[backspace, backspace, ...type("x"), enter],
        ...[...type("0"), enter]
      ])
      // Each bad answer refused in turn (asked again), and only the good one computed: in that order, nothing else.
      const outcomes = text.match(
        /99 must be less than or equal to 60|Must provide an integer value|computed \d+ s on s1/g
      )
      expect(outcomes).toEqual([
        "99 must be less than or equal to 60",
        "Must provide an integer value",
        "computed 0 s on s1"
      ])
    })
  )

  it.scopedLive("shows the balancer's status and switches its strategy", () =>
    Effect.gen(function* () {
      const { text } = yield* session([down, down, down, enter, down, down, down, down, enter, down, enter])
      expect(text).toContain("strategy: round-robin")
      expect(text).toMatch(/s1\s+127\.0\.0\.1:\d+\s+1\s+live/)
      expect(text).toContain("strategy is now weighted-round-robin")
    })
  )
})

describe.each([
  ["plain output", false],
  ["a terminal", true]
])("the interactive client on the test clock, on %s", (_, tty) => {
  it.scoped("after a re-route, a computation's seconds start again on the new server and never pass 100%", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const { address } = yield* ControlPlane.ControlPlane
      const wire = yield* Wire.Wire
      // The first server (round-robin) takes the computation and dies 3 s into it.
      yield* wire.serve({ host: "127.0.0.1", port: 50040 }, (connection) =>
        Effect.gen(function* () {
          if (Option.isNone(yield* connection.read(ServerRequest))) return
          yield* Effect.sleep("3 seconds")
          yield* connection.destroy
        }).pipe(Effect.ignore)
      )
      const folder = yield* servedFolder(16)
      const good = yield* startServer(folder.root)
      for (const [id, port] of [["dies", 50040] as const, ["good", good.address.port] as const]) {
        yield* registry.add({
          id: ServerId.make(id),
          host: Host.make("127.0.0.1"),
          port: Port.make(port),
          weight: Weight.make(1)
        })
      }
      const shown: Array<string> = []
      const menu = yield* Effect.fork(
        interactive({ balancer: address, out: folder.root }).pipe(
          Effect.provide(Client.layer({ ...Client.defaults, balancer: address }).pipe(Layer.provideMerge(files))),
          Effect.provide(TestTerminal.layer([down, down, enter, ...type("5"), enter], shown, tty))
        )
      )
      // 3 s on the first server, a moment to re-route, 5 s on the second: a second at a time, with real
      // time between for the in-memory I/O.
      for (let second = 0; second < 12; second++) {
        yield* TestServices.provideLive(Effect.sleep("30 millis"))
        yield* TestClock.adjust("1 second")
      }
      yield* Fiber.join(menu)
      const text = TestTerminal.plain(shown)
      expect(text).toMatch(/computed 5 s on good .*after 2 attempts/)
      const ticks = [...text.matchAll(/computing… (\d+) s \/ (\d+) s(?: \(attempt (\d)\))?/g)].map(
        ([, n, of, attempt]) => ({
          n: Number(n),
          of: Number(of),
          attempt: Number(attempt ?? 1)
        })
      )
      expect(ticks.filter((tick) => tick.attempt === 1).map((tick) => tick.n)).toEqual([1, 2, 3])
      expect(ticks.filter((tick) => tick.attempt === 2).map((tick) => tick.n)).toEqual([1, 2, 3, 4, 5])
      expect(ticks.every((tick) => tick.of === 5 && tick.n <= tick.of)).toBe(true)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )
})
