/**
 * Load on real processes, for the chaos and cluster tests: a folder of files to serve, `effect-lb
 * server` processes serving it, and an in-process `Client` (many requests without many processes).
 */
import { NodeContext } from "@effect/platform-node"
import { Context, Effect, Layer } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Status } from "../../src/domain/Protocol.js"
import { ask } from "../../src/services/client/BalancerClient.js"
import * as Client from "../../src/services/client/Client.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { spawn } from "./process.js"

export const listening = /listening on 127\.0\.0\.1:(\d+)/

/** A temporary folder with `served/data.bin` (256 KiB of random bytes) and `served/notes.txt`, removed with the scope. */
export const workspace = Effect.acquireRelease(
  Effect.sync(() => {
    const base = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-chaos-"))
    const served = Path.join(base, "served")
    Fs.mkdirSync(served)
    const data = Crypto.randomBytes(256 * 1024)
    Fs.writeFileSync(Path.join(served, "data.bin"), data)
    Fs.writeFileSync(Path.join(served, "notes.txt"), "chaos\n")
    return { base, served, data }
  }),
  ({ base }) => Effect.sync(() => Fs.rmSync(base, { recursive: true, force: true }))
)

/** The ports of the balancers on 127.0.0.1, one or several. */
export type Balancers = number | ReadonlyArray<number>

const ports = (balancers: Balancers): ReadonlyArray<number> => (typeof balancers === "number" ? [balancers] : balancers)

/** A `Client` for the balancers, patient (30 attempts), built in the test's scope. */
export const clientFor = (balancers: Balancers, overrides: Partial<Client.ClientConfig> = {}) =>
  Effect.map(
    Layer.build(
      Client.layer({
        ...Client.defaults,
        balancer: ports(balancers).map((port) => ({ host: "127.0.0.1", port })),
        attempts: 30,
        backoff: "20 millis",
        connectTimeout: "1 second",
        replyTimeout: "2 seconds",
        ...overrides
      }).pipe(Layer.provide(Wire.layer), Layer.provide(NodeContext.layer))
    ),
    (context) => Context.get(context, Client.Client)
  )

/** How many servers the balancer at `port` has live (0 when it does not answer). */
export const liveServers = (port: number) =>
  ask({ host: "127.0.0.1", port }, new Status()).pipe(
    Effect.map((reply) => (reply._tag === "StatusReport" ? reply.servers.filter((s) => s.state === "live").length : 0)),
    Effect.orElseSucceed(() => 0),
    Effect.provide(Wire.layer)
  )

/** An `effect-lb server` serving `folder`, given the balancers (`--balancer a,b,c`); its port once it listens. */
export const startServer = (id: string, port: number, balancers: Balancers, folder: string) =>
  Effect.gen(function* () {
    const server = yield* spawn([
      "server",
      "--port",
      String(port),
      "--id",
      id,
      "--balancer",
      ports(balancers)
        .map((balancer) => `127.0.0.1:${balancer}`)
        .join(","),
      "--files",
      folder,
      "--compute-scale",
      "0.01"
    ])
    return { process: server, port: Number((yield* server.waitFor(listening))[1]) }
  })
