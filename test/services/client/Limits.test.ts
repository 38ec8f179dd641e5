import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as Client from "../../../src/services/client/Client.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer } from "../../support/balancer.js"
import { startServer } from "../../support/server.js"

const plane = ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(Layer.provideMerge(balancerLayer()))

/** A temporary folder (removed with the scope) holding `names`, each a small file. */
export const folderWith = (names: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-limits-"))
      for (const name of names) Fs.writeFileSync(Path.join(root, name), name.slice(0, 8))
      return root
    }),
    (root) => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true }))
  )

/** A client of the balancer under test, with one server serving `folder` registered. */
const clientServing = (folder: string) =>
  Effect.gen(function* () {
    const server = yield* startServer(folder)
    const registry = yield* ServerRegistry
    yield* registry.add({
      id: ServerId.make("only"),
      host: Host.make("127.0.0.1"),
      port: Port.make(server.address.port),
      weight: Weight.make(1)
    })
    const { address } = yield* ControlPlane.ControlPlane
    const context = yield* Layer.build(
      Client.layer({ ...Client.defaults, balancer: address, backoff: "10 millis" }).pipe(
        Layer.provide(NodeContext.layer)
      )
    )
    return { server, client: yield* Effect.provide(Client.Client, context) }
  })

describe("Downloads with the longest names a folder takes", () => {
  it.scopedLive("saves a file whose name is 255 bytes (ASCII, and UTF-8 of two bytes a character)", () =>
    Effect.gen(function* () {
      const ascii = `${"a".repeat(251)}.bin`
      const accented = `${"é".repeat(125)}.txt0`
      expect(Buffer.byteLength(ascii)).toBe(255)
      expect(Buffer.byteLength(accented)).toBe(255)
      const folder = yield* folderWith([ascii, accented])
      const out = yield* folderWith([])
      const { client } = yield* clientServing(folder)
      for (const name of [ascii, accented]) {
        const saved = yield* client.download(name, out)
        expect(saved.value.path).toBe(Path.join(out, name))
        expect(Fs.readFileSync(saved.value.path, "utf8")).toBe(name.slice(0, 8))
      }
      // Nothing left behind but the two files.
      expect(Fs.readdirSync(out).sort()).toEqual([ascii, accented].sort())
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layer))
  )
})
