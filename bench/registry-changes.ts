/**
 * The change generator of `bench/registry.ts`, in its own process so that it does not share a CPU
 * with the Locate load generator: writes weight changes into the shared registry at a steady rate,
 * through the store's own write path (`RedisStore.make(...).write`: the Lua script that writes,
 * bumps the revision and publishes), as another balancer would. Each change gives a server a weight
 * it did not have, in turn over the servers given.
 *
 *   node dist/bench/registry-changes.js --registry redis://127.0.0.1:P --namespace N
 *     --servers HOST:PORT,HOST:PORT [--rate 1000] [--seconds 3]
 *
 * Prints `changing` when it starts, then `done SENT OK FAILED SECONDS` when it stops.
 */
import { Duration, Effect, Either, Runtime, Schedule, Schema } from "effect"
import * as Crypto from "node:crypto"
import { parseArgs } from "node:util"
import * as RedisStore from "../src/services/balancer/shared/RedisStore.js"
import { ServerRecord, type SharedChange } from "../src/services/balancer/shared/Store.js"

const { values } = parseArgs({
  options: {
    registry: { type: "string", default: "" },
    namespace: { type: "string", default: "bench" },
    servers: { type: "string", default: "" },
    rate: { type: "string", default: "1000" },
    seconds: { type: "string", default: "3" }
  }
})
const target = RedisStore.parseRegistryUrl(values.registry)
const endpoints = values.servers.split(",").filter((server) => server !== "")
const rate = Number(values.rate)
const seconds = Number(values.seconds)
if (Either.isLeft(target) || endpoints.length === 0 || !(rate > 0) || !(seconds > 0)) {
  console.error(
    "usage: registry-changes --registry redis://HOST:PORT --namespace N --servers HOST:PORT,… [--rate N] [--seconds S]"
  )
  process.exit(2)
}

const recordOf = Schema.decodeUnknownSync(ServerRecord)
/** The server `endpoint` (configured, as `--server` gives it) with `weight`. */
const change = (endpoint: string, weight: number): SharedChange => {
  const [host = "", port = ""] = endpoint.split(/:(?=\d+$)/)
  return {
    _tag: "Server",
    record: recordOf({ id: endpoint, host, port: Number(port), weight, draining: false, origin: "configured" })
  }
}

/** Writes not yet answered, at most (each also times out after 2 s, ioredis' command timeout). */
const maxInFlight = 256

const generate = Effect.gen(function* () {
  const store = yield* RedisStore.make({ target: target.right, namespace: values.namespace, timeout: "2 seconds" })
  // Until it answers (ioredis queues nothing while it connects), at most 3 s.
  yield* store.snapshot.pipe(
    Effect.retry(Schedule.spaced(Duration.millis(20))),
    Effect.timeoutFail({ duration: Duration.seconds(3), onTimeout: () => new Error("the store did not answer in 3 s") })
  )
  const runtime = yield* Effect.runtime<never>()
  const signer = { from: "bench-changes", instance: Crypto.randomUUID() }
  const weights = new Map(endpoints.map((endpoint): [string, number] => [endpoint, 1]))
  let sent = 0
  let ok = 0
  let failed = 0
  let inFlight = 0
  const write = (endpoint: string, weight: number) => {
    inFlight++
    Runtime.runFork(runtime)(
      store
        .write({ ...signer, sequence: sent + 1 }, change(endpoint, weight))
        .pipe(
          Effect.match({ onFailure: () => failed++, onSuccess: () => ok++ }),
          Effect.ensuring(Effect.sync(() => inFlight--))
        )
    )
  }
  const started = Date.now()
  const until = started + seconds * 1000
  console.log("changing")
  // Every 2 ms, as many changes as the rate asks for by now (at most `maxInFlight` on their way).
  yield* Effect.async<void>((resume) => {
    const tick = setInterval(() => {
      const now = Date.now()
      const due = Math.floor(((Math.min(now, until) - started) / 1000) * rate)
      while (sent < due && inFlight < maxInFlight) {
        const endpoint = endpoints[sent % endpoints.length] ?? ""
        const weight = ((weights.get(endpoint) ?? 1) % 100) + 1
        weights.set(endpoint, weight)
        write(endpoint, weight)
        sent++
      }
      if (now >= until && inFlight === 0) {
        clearInterval(tick)
        console.log(`done ${sent} ${ok} ${failed} ${((now - started) / 1000).toFixed(3)}`)
        resume(Effect.void)
      }
    }, 2)
    return Effect.sync(() => clearInterval(tick))
  })
})

await Effect.runPromise(Effect.scoped(generate))
