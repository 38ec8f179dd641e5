import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
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
const session = (keys: ReadonlyArray<Parameters<typeof TestTerminal.layer>[0][number]>) =>
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
      expect(text).toContain("notes.txt  (txt)")
    })
  )

  it.scopedLive("downloads a file picked from the list into the output folder", () =>
    Effect.gen(function* () {
      // Download a file → the list is alias.txt, big.bin, empty, notes.txt → big.bin.
      const { text, out, big } = yield* session([down, enter, down, enter])
      expect(text).toMatch(/saved .*big\.bin \(0\.00 MB\) from s1/)
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
