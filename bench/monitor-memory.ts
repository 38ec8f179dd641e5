/**
 * What watching a server costs: heap per server with and without the health monitor, for N servers
 * at addresses where nothing listens (each probe is refused at once, as in a Register flood), after
 * the monitor has probed them for a few seconds; and the CPU the monitor spends meanwhile.
 *
 *   npm run build && node --expose-gc dist/bench/monitor-memory.js [--servers 10000] [--seconds 5]
 */
import { Effect, Layer, Logger, LogLevel } from "effect"
import { parseArgs } from "node:util"
import { Host, Port, ServerId, Weight } from "../src/domain/Server.js"
import * as HealthMonitor from "../src/services/balancer/HealthMonitor.js"
import * as ServerRegistry from "../src/services/balancer/ServerRegistry.js"
import * as Wire from "../src/services/wire/Wire.js"

const { values } = parseArgs({
  options: { servers: { type: "string", default: "10000" }, seconds: { type: "string", default: "5" } }
})
const count = Number(values.servers)
const seconds = Number(values.seconds)

const collect = () => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error("run with node --expose-gc")
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage().heapUsed
}

const measure = (monitored: boolean) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry.ServerRegistry
    yield* Effect.sleep("500 millis")
    const before = collect()
    const cpuBefore = process.cpuUsage()
    for (let i = 0; i < count; i++) {
      yield* registry.add({
        id: ServerId.make(`flood-${i}`),
        host: Host.make(`127.1.${i >> 8}.${i & 255}`),
        port: Port.make(9),
        weight: Weight.make(1)
      })
    }
    yield* Effect.sleep(`${seconds} seconds`)
    const cpu = process.cpuUsage(cpuBefore)
    const after = collect()
    const live = (yield* registry.list).filter((server) => server.state === "live").length
    console.log(
      `${monitored ? "registry + monitor" : "registry alone    "}: ${count} servers, ` +
        `${((after - before) / count).toFixed(0)} bytes of heap each, ` +
        `CPU ${((cpu.user + cpu.system) / 1000 / seconds).toFixed(0)} ms/s, ${live} live`
    )
  })

const quiet = Logger.withMinimumLogLevel(LogLevel.Error)
const registryOnly = ServerRegistry.layer()
const withMonitor = HealthMonitor.layer().pipe(Layer.provideMerge(registryOnly), Layer.provideMerge(Wire.layer))

await Effect.runPromise(measure(false).pipe(Effect.provide(registryOnly), Effect.scoped, quiet))
await Effect.runPromise(measure(true).pipe(Effect.provide(withMonitor), Effect.scoped, quiet))
