import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { FileList, ListFiles } from "../../../src/domain/Protocol.js"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as Client from "../../../src/services/client/Client.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer } from "../../support/balancer.js"
import { raw } from "../../support/net.js"
import { connectTo, startServer } from "../../support/server.js"

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

const manyNames = (count: number) => Array.from({ length: count }, (_, i) => `f${i}.txt`)

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

describe("FileList pages", () => {
  it.scopedLive("an old client asking once gets the first page that fits one line, and next says where to go on", () =>
    Effect.gen(function* () {
      const folder = yield* folderWith(manyNames(5_000))
      const server = yield* startServer(folder)
      // Raw bytes, so a line over the limit would show as one: the server must never send it.
      const { data } = yield* raw(server.address.port, `{"_tag":"ListFiles"}\n`, { expectLines: 1, waitMs: 10_000 })
      const line = data.split("\n")[0] ?? ""
      expect(Buffer.byteLength(line)).toBeLessThanOrEqual(65_536)
      const first = JSON.parse(line) as { files: Record<string, string>; next?: string }
      const names = Object.keys(first.files)
      expect(names.length).toBeGreaterThan(1000)
      expect(names.length).toBeLessThan(5_000)
      expect(first.next).toBe(names.at(-1))
      // In name order, and the next page starts right after the cursor.
      expect(names).toEqual([...names].sort())
      const client = yield* connectTo(server.address)
      const second = yield* client.ask(new ListFiles({ after: first.next }))
      const after = second._tag === "FileList" ? Object.keys(second.files) : []
      expect((after[0] ?? "") > (first.next ?? "")).toBe(true)
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("a small folder is one page with no next, as before", () =>
    Effect.gen(function* () {
      const folder = yield* folderWith(["a.txt", "b"])
      const server = yield* startServer(folder)
      const client = yield* connectTo(server.address)
      const reply = yield* client.ask(new ListFiles())
      expect(reply).toEqual(new FileList({ files: { "a.txt": "txt", b: "" }, sizes: { "a.txt": 5, b: 1 } }))
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive(
    "the client lists all of a server's 10,000 files",
    () =>
      Effect.gen(function* () {
        const folder = yield* folderWith(manyNames(10_000))
        const { client } = yield* clientServing(folder)
        const listed = yield* client.list()
        expect(Object.keys(listed.value).length).toBe(10_000)
        expect(listed.value["f9999.txt"]).toBe("txt")
        expect(listed.attempts).toBe(1)
      }).pipe(Effect.provide(plane), Effect.provide(Wire.layer)),
    30_000
  )
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
