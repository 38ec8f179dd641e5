import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import {
  BalancerReply,
  BalancerRequest,
  type ClusterView,
  Status,
  type StatusReport
} from "../../../src/domain/Protocol.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import { Cluster } from "../../../src/services/balancer/shared/Cluster.js"
import { maxBalancersShown } from "../../../src/services/balancer/StatusPages.js"
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

type Member = ClusterView["balancers"][number]

/** The `i`th balancer of a big cluster, with a long id. */
const memberAt = (i: number): Member => ({
  id: `balancer-${String(i).padStart(4, "0")}-${"x".repeat(100)}`,
  addresses: { balancer: `10.0.${i >> 8}.${i & 255}:4000`, proxy: "10.0.0.1:8080", admin: "127.0.0.1:9000" },
  version: "0.1.0",
  startedAt: 1_795_680_300_000,
  lastSeenAt: 1_795_680_366_000,
  self: i === 0
})

/** A cluster of `count` balancers (after `extra`), as a registry with many of them would show. */
const bigCluster = (count: number, extra: ReadonlyArray<Member> = []): ClusterView => ({
  registry: {
    connected: true,
    revision: 7,
    namespace: "effect-lb",
    url: "redis://127.0.0.1:6379",
    syncLagSeconds: 0.002
  },
  balancers: [...extra, ...Array.from({ length: count }, (_, i) => memberAt(i))]
})

/** A balancer whose id alone is longer than a line: only another balancer's bug (or a hostile one) makes it. */
const hugeMember: Member = { ...memberAt(9999), id: "h".repeat(100_000) }

/** The balancer port with a stand-in cluster whose view is `view`. */
const planeWith = (view: ClusterView) =>
  plane.pipe(
    Layer.provide(Layer.succeed(Cluster, Cluster.of({ announce: () => Effect.void, view: Effect.succeed(view) })))
  )

const lineBytes = (report: StatusReport) =>
  Buffer.byteLength(JSON.stringify(Schema.encodeSync(BalancerReply)(report)), "utf8")

describe("the cluster on the balancer port's StatusReport", () => {
  it.scoped(
    "the first page has the cluster, cut to 64 balancers and counted; later pages do not; each line fits",
    () =>
      Effect.gen(function* () {
        yield* servers(1000)
        const first = yield* rawStatus(new Status())
        expect(lineBytes(first)).toBeLessThanOrEqual(ControlPlane.defaults.maxLine)
        expect(first.cluster?.registry).toEqual(bigCluster(0).registry)
        const shown = first.cluster?.balancers ?? []
        expect(shown.length).toBeGreaterThan(0)
        expect(shown.length).toBeLessThanOrEqual(maxBalancersShown)
        expect(first.cluster?.total).toBe(500)
        expect(shown[0]?.self).toBe(true)
        expect(first.servers.length).toBeGreaterThan(50)
        expect(first.next).toBe(first.servers.at(-1)?.id)
        const second = yield* rawStatus(new Status({ after: first.next }))
        expect(second.cluster).toBeUndefined()
        expect(lineBytes(second)).toBeLessThanOrEqual(ControlPlane.defaults.maxLine)
      }).pipe(Effect.provide(planeWith(bigCluster(500))), Effect.provide(Wire.layerMemory)),
    15_000
  )

  it.scoped("a small cluster comes whole, as the registry gave it, without total", () =>
    Effect.gen(function* () {
      yield* servers(3)
      const report = yield* rawStatus(new Status())
      expect(report.cluster).toEqual(bigCluster(3))
      expect(report.cluster?.total).toBeUndefined()
    }).pipe(Effect.provide(planeWith(bigCluster(3))), Effect.provide(Wire.layerMemory))
  )

  it.scoped("a balancer too long for the line is left out, counted, and the others are shown", () =>
    Effect.gen(function* () {
      yield* servers(3)
      const report = yield* rawStatus(new Status())
      expect(report.cluster?.balancers.map((member) => member.id.slice(0, 13))).toEqual([
        "balancer-0000",
        "balancer-0001",
        "balancer-0002"
      ])
      expect(report.cluster?.total).toBe(4)
      expect(report.servers.length).toBe(3)
    }).pipe(Effect.provide(planeWith(bigCluster(3, [hugeMember]))), Effect.provide(Wire.layerMemory))
  )

  it.scoped(
    "the client's status keeps the cluster of the first page across every page",
    () =>
      Effect.gen(function* () {
        yield* servers(1000)
        const { address } = yield* ControlPlane.ControlPlane
        const report = yield* status(address)
        expect(report._tag).toBe("StatusReport")
        if (report._tag !== "StatusReport") return
        expect(report.servers.length).toBe(1000)
        expect(report.cluster?.total).toBe(100)
        expect(report.cluster?.registry.connected).toBe(true)
      }).pipe(Effect.provide(planeWith(bigCluster(100))), Effect.provide(Wire.layerMemory)),
    15_000
  )
})
