import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { BalancerReply, BalancerRequest, Status, type StatusReport } from "../../../src/domain/Protocol.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import { status } from "../../../src/services/client/BalancerClient.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer, spec } from "../../support/balancer.js"
import { spawn } from "../../support/process.js"

const plane = ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }).pipe(Layer.provideMerge(balancerLayer()))

/** `count` servers in the registry, added directly: what a balancer with that many looks like. */
const servers = (count: number) =>
  Effect.flatMap(ServerRegistry, (registry) =>
    Effect.forEach(
      Array.from({ length: count }, (_, i) => i + 1),
      (n) => registry.add(spec(n)),
      { discard: true }
    )
  )

/** One raw `Status` exchange, and the byte length of the line that came back. */
const rawStatus = (request: Status) =>
  Effect.gen(function* () {
    const { address } = yield* ControlPlane.ControlPlane
    const connection = yield* (yield* Wire.Wire).connect(address)
    yield* connection.send(BalancerRequest, request)
    const reply = Option.getOrThrow(yield* connection.read(BalancerReply))
    return reply as StatusReport
  }).pipe(Effect.scoped)

describe("StatusReport pages on the balancer port", () => {
  it.scoped("a small report is one page, as before: every server, no next", () =>
    Effect.gen(function* () {
      yield* servers(3)
      const report = yield* rawStatus(new Status())
      expect(report.servers.map((s) => s.id)).toEqual(["s1", "s2", "s3"])
      expect(report.next).toBeUndefined()
      expect(report.total).toBe(3)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scoped("an old client asking without a cursor gets the first page that fits, marked with next", () =>
    Effect.gen(function* () {
      yield* servers(2000)
      // The reader's limit is the protocol's: a line over 64 KiB would fail this read.
      const first = yield* rawStatus(new Status())
      expect(first.total).toBe(2000)
      expect(first.servers.length).toBeGreaterThan(100)
      expect(first.servers.length).toBeLessThan(2000)
      expect(first.next).toBe(first.servers.at(-1)?.id)
      const second = yield* rawStatus(new Status({ after: first.servers.at(-1)?.id }))
      expect((second.servers[0]?.id ?? "") > (first.next ?? "")).toBe(true)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )

  it.scoped("the client reads every page: 5,000 servers, each exactly once", () =>
    Effect.gen(function* () {
      yield* servers(5000)
      const { address } = yield* ControlPlane.ControlPlane
      const report = yield* status(address)
      expect(report._tag).toBe("StatusReport")
      const ids = report._tag === "StatusReport" ? report.servers.map((s) => s.id) : []
      expect(ids.length).toBe(5000)
      expect(new Set(ids).size).toBe(5000)
    }).pipe(Effect.provide(plane), Effect.provide(Wire.layerMemory))
  )
})

describe("effect-lb status with 5,000 servers (a real process over loopback)", () => {
  it.scopedLive(
    "shows all 5,000 servers",
    () =>
      Effect.gen(function* () {
        yield* servers(5000)
        const { address } = yield* ControlPlane.ControlPlane
        const balancer = `127.0.0.1:${address.port}`
        const table = yield* spawn(["status", "--balancer", balancer])
        expect(yield* table.exited).toBe(0)
        const rows = table
          .output()
          .split("\n")
          .filter((line) => /^s\d+\s/.test(line))
        expect(rows.length).toBe(5000)
        expect(rows[0]).toMatch(/^s1\s/)
        expect(rows.at(-1)).toMatch(/^s5000\s/)
      }).pipe(Effect.provide(plane), Effect.provide(Wire.layer)),
    30_000
  )
})
