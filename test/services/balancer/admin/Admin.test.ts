import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Option } from "effect"
import * as Net from "node:net"
import type { StatusReport } from "../../../../src/domain/Protocol.js"
import { Host, Port, ServerId, type ServerSpec, Weight } from "../../../../src/domain/Server.js"
import * as Admin from "../../../../src/services/balancer/admin/Admin.js"
import { Balancer } from "../../../../src/services/balancer/Balancer.js"
import * as ControlPlane from "../../../../src/services/balancer/ControlPlane.js"
import * as HealthMonitor from "../../../../src/services/balancer/HealthMonitor.js"
import * as Proxy from "../../../../src/services/balancer/Proxy.js"
import * as Wire from "../../../../src/services/wire/Wire.js"
import * as Metrics from "../../../../src/services/balancer/Metrics.js"
import { ServerRegistry } from "../../../../src/services/balancer/ServerRegistry.js"
import { balancerLayer } from "../../../support/balancer.js"
import type { StrategyName } from "../../../../src/services/balancer/strategies/Catalog.js"
import { eventually } from "../../../support/eventually.js"
import { parse, valueOf } from "../../../support/prometheus.js"
import { echoServer } from "../../../support/net.js"

/** Server ids unique to this file: metrics are process-wide, and other tests pick too. */
const server = (name: string, port: number, weight = 1): ServerSpec => ({
  id: ServerId.make(`admin-${name}`),
  host: Host.make("127.0.0.1"),
  port: Port.make(port),
  weight: Weight.make(weight)
})

const adminLayer = (token?: string, strategy: StrategyName = "round-robin") =>
  Admin.layer({ host: "127.0.0.1", port: 0 }).pipe(Layer.provideMerge(balancerLayer(strategy, { token })))

interface Reply {
  readonly status: number
  readonly type: string | null
  readonly text: string
  readonly json: unknown
}

/** One HTTP request to the admin server under test. */
const http = (method: string, path: string, options: { body?: string; token?: string } = {}) =>
  Effect.gen(function* () {
    const { address } = yield* Admin.Admin
    const headers: Record<string, string> = { "content-type": "application/json" }
    if (options.token !== undefined) headers["authorization"] = `Bearer ${options.token}`
    return yield* Effect.promise(async (): Promise<Reply> => {
      const response = await fetch(`http://127.0.0.1:${address.port}${path}`, {
        method,
        headers,
        ...(options.body === undefined ? {} : { body: options.body })
      })
      const text = await response.text()
      let json: unknown = undefined
      try {
        json = JSON.parse(text)
      } catch {
        json = undefined
      }
      return { status: response.status, type: response.headers.get("content-type"), text, json }
    })
  })

const metrics = Effect.map(http("GET", "/metrics"), (reply) => parse(reply.text))

describe("the admin API", () => {
  it.scopedLive("reports the status and the servers as JSON", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* registry.add(server("a", 42001))
      yield* registry.add(server("b", 42002, 3))
      const status = yield* http("GET", "/api/status")
      expect(status.status).toBe(200)
      expect(status.json).toMatchObject({
        _tag: "StatusReport",
        strategy: "round-robin",
        servers: [
          { id: "admin-a", port: 42001, weight: 1, state: "live", active: 0 },
          { id: "admin-b", port: 42002, weight: 3, state: "live" }
        ]
      })
      expect((yield* http("GET", "/api/servers")).json).toHaveLength(2)
      expect((yield* http("GET", "/api/servers/admin-b")).json).toMatchObject({ id: "admin-b", weight: 3 })
      const missing = yield* http("GET", "/api/servers/admin-nobody")
      expect(missing.status).toBe(404)
      expect(missing.json).toMatchObject({ _tag: "ServerNotFound" })
      expect((yield* http("GET", "/api/strategies")).json).toContain("weighted-least-connection")
      const nowhere = yield* http("GET", "/api/nothing-here")
      expect(nowhere.status).toBe(404)
      expect(nowhere.json).toMatchObject({ _tag: "NotFound" })
    }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive("switches the strategy, and refuses an unknown one or a bad body with a 400 that changes nothing", () =>
    Effect.gen(function* () {
      const balancer = yield* Balancer
      const switched = yield* http("POST", "/api/strategy", { body: '{"strategy":"weighted-least-connection"}' })
      expect(switched).toMatchObject({ status: 200, json: { strategy: "weighted-least-connection" } })
      expect(yield* balancer.strategy).toBe("weighted-least-connection")
      const bad: ReadonlyArray<[string, RegExp]> = [
        ['{"strategy":"fastest-please"}', /unknown strategy/],
        ['{"strategy":', /not JSON/],
        ['{"strategy":42}', /strategy/],
        ["[]", /Expected/],
        ['{"strategy":"../../etc"}', /strategy/],
        [`{"strategy":"${"x".repeat(100_000)}"}`, /larger than 65536 bytes/],
        ["[".repeat(50_000), /not JSON|not a valid request/]
      ]
      for (const [body, message] of bad) {
        const reply = yield* http("POST", "/api/strategy", { body })
        expect(reply.status, body.slice(0, 40)).toBe(400)
        expect(reply.json).toMatchObject({ _tag: "InvalidRequest" })
        expect((reply.json as { message: string }).message).toMatch(message)
      }
      expect(yield* balancer.strategy).toBe("weighted-least-connection")
    }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive("adds a server (id and weight defaulted), and refuses an invalid one", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const added = yield* http("POST", "/api/servers", { body: '{"host":"127.0.0.1","port":42010}' })
      expect(added.status).toBe(201)
      expect(added.json).toMatchObject({ id: "127.0.0.1:42010", weight: 1, state: "live" })
      const named = yield* http("POST", "/api/servers", {
        body: '{"id":"admin-named","host":"::1","port":42011,"weight":5}'
      })
      expect(named.json).toMatchObject({ id: "admin-named", host: "::1", weight: 5 })
      for (const body of [
        '{"host":"127.0.0.1","port":0}',
        '{"host":"127.0.0.1","port":70000}',
        '{"host":"a b","port":42012}',
        '{"host":"127.0.0.1","port":42013,"weight":-1}',
        '{"id":"../x y","host":"127.0.0.1","port":42014}'
      ]) {
        const reply = yield* http("POST", "/api/servers", { body })
        expect(reply.status, body).toBe(400)
        expect(reply.json).toMatchObject({ _tag: "InvalidRequest" })
      }
      expect((yield* registry.list).map((s) => s.id).sort()).toEqual(["127.0.0.1:42010", "admin-named"])
    }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive(
    "refuses to add a server already known by its id or its address with a 409 naming it, and changes nothing",
    () =>
      Effect.gen(function* () {
        const registry = yield* ServerRegistry
        yield* registry.add(server("known", 42081, 3))
        yield* registry.reportLoad(ServerId.make("admin-known"), 2)
        const before = yield* registry.get(ServerId.make("admin-known"))
        const attempts: ReadonlyArray<[string, RegExp]> = [
          // The same id elsewhere, the same address under another id (or under its default id), and the same server again.
          [
            '{"id":"admin-known","host":"127.0.0.1","port":42082,"weight":1}',
            /server "admin-known" is already registered/
          ],
          [
            '{"id":"admin-other","host":"127.0.0.1","port":42081,"weight":1}',
            /127\.0\.0\.1:42081 is already registered/
          ],
          ['{"host":"127.0.0.1","port":42081}', /as server "admin-known"/],
          ['{"id":"admin-known","host":"127.0.0.1","port":42081,"weight":3}', /PATCH \/api\/servers\/admin-known/]
        ]
        for (const [body, message] of attempts) {
          const reply = yield* http("POST", "/api/servers", { body })
          expect(reply.status, body).toBe(409)
          expect(reply.json).toMatchObject({ _tag: "ServerExists", id: "admin-known" })
          expect((reply.json as { message: string }).message).toMatch(message)
        }
        // Its weight, state, load and address are what they were; no other server appeared.
        expect(yield* registry.get(ServerId.make("admin-known"))).toEqual(before)
        expect((yield* registry.list).map((s) => s.id)).toEqual(["admin-known"])
      }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive("changes a weight in place, and the strategy follows it at once", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const balancer = yield* Balancer
      yield* registry.add(server("light", 42071))
      yield* registry.add(server("heavy", 42072))
      yield* registry.setState(ServerId.make("admin-light"), "dead")
      const changed = yield* http("PATCH", "/api/servers/admin-heavy", { body: '{"weight":3}' })
      expect(changed).toMatchObject({ status: 200, json: { id: "admin-heavy", weight: 3, state: "live" } })
      yield* registry.setState(ServerId.make("admin-light"), "live")
      // The light server kept its state history; weights 1:3 now share the picks 1:3.
      const picks = yield* Effect.forEach(Array.from({ length: 40 }), () =>
        Effect.map(balancer.determineServer(), (location) => location.id)
      )
      expect(picks.filter((id) => id === "admin-heavy")).toHaveLength(30)
      for (const body of ['{"weight":0}', '{"weight":1001}', '{"weight":"3"}', "{}", '{"weight":2.5}']) {
        const reply = yield* http("PATCH", "/api/servers/admin-heavy", { body })
        expect(reply.status, body).toBe(400)
        expect(reply.json).toMatchObject({ _tag: "InvalidRequest" })
      }
      expect(yield* http("PATCH", "/api/servers/admin-nobody", { body: '{"weight":2}' })).toMatchObject({
        status: 404,
        json: { _tag: "ServerNotFound" }
      })
      expect(Option.map(yield* registry.get(ServerId.make("admin-heavy")), (s) => s.weight)).toEqual(Option.some(3))
    }).pipe(Effect.provide(adminLayer(undefined, "weighted-round-robin")))
  )

  it.scopedLive("drains a server then removes it, removes one at once with ?now=true, and 404s an unknown one", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* registry.add(server("busy", 42021))
      yield* registry.add(server("idle", 42022))
      yield* registry.reportLoad(ServerId.make("admin-busy"), 2)
      const draining = yield* http("DELETE", "/api/servers/admin-busy")
      expect(draining).toMatchObject({ status: 202, json: { id: "admin-busy", state: "draining" } })
      // Draining: no new clients, still listed until its connections are gone.
      const busy = yield* registry.get(ServerId.make("admin-busy"))
      expect(Option.map(busy, (s) => s.state)).toEqual(Option.some("draining"))
      yield* registry.reportLoad(ServerId.make("admin-busy"), 0)
      yield* eventually(registry.get(ServerId.make("admin-busy")), Option.isNone, "2 seconds")
      const removed = yield* http("DELETE", "/api/servers/admin-idle?now=true")
      expect(removed).toMatchObject({ status: 200, json: { state: "removed" } })
      expect(Option.isNone(yield* registry.get(ServerId.make("admin-idle")))).toBe(true)
      const unknown = yield* http("DELETE", "/api/servers/admin-idle")
      expect(unknown).toMatchObject({ status: 404, json: { _tag: "ServerNotFound" } })
    }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive("with a token, refuses every change without the right bearer token, and still shows the status", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const balancer = yield* Balancer
      yield* registry.add(server("guarded", 42031))
      const attempts: ReadonlyArray<[string, string, string | undefined]> = [
        ["POST", "/api/strategy", '{"strategy":"weighted-round-robin"}'],
        ["POST", "/api/servers", '{"host":"127.0.0.1","port":42032}'],
        ["PATCH", "/api/servers/admin-guarded", '{"weight":9}'],
        ["DELETE", "/api/servers/admin-guarded", undefined],
        ["DELETE", "/api/servers/admin-guarded?now=true", undefined]
      ]
      for (const token of [undefined, "wrong", "s3cret-but-longer", ""]) {
        for (const [method, path, body] of attempts) {
          const reply = yield* http(method, path, {
            ...(body === undefined ? {} : { body }),
            ...(token === undefined ? {} : { token })
          })
          expect(reply.status, `${method} ${path} with ${token}`).toBe(401)
          expect(reply.json).toMatchObject({ _tag: "Unauthorized" })
        }
      }
      expect(yield* balancer.strategy).toBe("round-robin")
      expect((yield* registry.list).map((s) => `${s.id}:${s.weight}`)).toEqual(["admin-guarded:1"])
      expect((yield* http("GET", "/api/status")).status).toBe(200)
      const allowed = yield* http("POST", "/api/strategy", {
        body: '{"strategy":"weighted-round-robin"}',
        token: "s3cret"
      })
      expect(allowed.status).toBe(200)
      expect(yield* balancer.strategy).toBe("weighted-round-robin")
    }).pipe(Effect.provide(adminLayer("s3cret")))
  )

  it.scopedLive("answers /healthz always, and /readyz only while a server is live", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      expect(yield* http("GET", "/healthz")).toMatchObject({ status: 200, json: { status: "ok" } })
      expect(yield* http("GET", "/readyz")).toMatchObject({ status: 503, json: { ready: false, live: 0 } })
      yield* registry.add(server("ready", 42041))
      expect(yield* http("GET", "/readyz")).toMatchObject({ status: 200, json: { ready: true, live: 1 } })
      yield* registry.setState(ServerId.make("admin-ready"), "dead")
      expect((yield* http("GET", "/readyz")).status).toBe(503)
    }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive("serves Prometheus text whose numbers move when picks, re-routes and ejections happen", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const balancer = yield* Balancer
      const a = server("m1", 42051)
      const b = server("m2", 42052)
      yield* registry.add(a)
      yield* registry.add(b)
      const reply = yield* http("GET", "/metrics")
      expect(reply.status).toBe(200)
      expect(reply.type).toMatch(/^text\/plain; version=0\.0\.4/)
      const before = parse(reply.text)
      const locates = (families: typeof before, id: string) =>
        valueOf(families, "effect_lb_locates_total", { server: id, strategy: "round-robin" }) ?? 0
      for (let i = 0; i < 10; i++) yield* balancer.determineServer()
      // A client that failed on m1 and comes back: a re-route counted against m1.
      yield* balancer.determineServer([a])
      yield* registry.reportLoad(b.id, 7)
      yield* registry.setState(a.id, "dead")
      const after = yield* metrics
      expect(locates(after, a.id) - locates(before, a.id)).toBe(5)
      expect(locates(after, b.id) - locates(before, b.id)).toBe(6)
      expect(
        (valueOf(after, "effect_lb_reroutes_total", { server: a.id }) ?? 0) -
          (valueOf(before, "effect_lb_reroutes_total", { server: a.id }) ?? 0)
      ).toBe(1)
      expect(valueOf(after, "effect_lb_ejections_total", { server: a.id })).toBe(
        (valueOf(before, "effect_lb_ejections_total", { server: a.id }) ?? 0) + 1
      )
      expect(valueOf(after, "effect_lb_server_active_connections", { server: b.id })).toBe(7)
      expect(valueOf(after, "effect_lb_server_state", { server: a.id, state: "dead" })).toBe(1)
      expect(valueOf(after, "effect_lb_server_state", { server: a.id, state: "live" })).toBe(0)
      expect(valueOf(after, "effect_lb_strategy", { strategy: "round-robin" })).toBe(1)
      // A probe's round trip lands in its server's histogram, in seconds.
      const probes = (families: typeof before) =>
        valueOf(families, "effect_lb_probe_round_trip_seconds_count", { server: b.id }) ?? 0
      Metrics.unsafeProbed(b.id, 2.5)
      const probed = yield* metrics
      expect(probed.get("effect_lb_probe_round_trip_seconds")?.type).toBe("histogram")
      expect(probes(probed)).toBe(probes(after) + 1)
      expect(
        valueOf(probed, "effect_lb_probe_round_trip_seconds_bucket", { server: b.id, le: "0.0032" }) ?? 0
      ).toBeGreaterThanOrEqual(1)
      // Nothing live: a failed pick, counted under the strategy.
      yield* registry.setState(b.id, "dead")
      const failedBefore = valueOf(after, "effect_lb_picks_failed_total", { strategy: "round-robin" }) ?? 0
      yield* Effect.flip(balancer.determineServer())
      expect(valueOf(yield* metrics, "effect_lb_picks_failed_total", { strategy: "round-robin" })).toBe(
        failedBefore + 1
      )
      // A server that left takes its series with it.
      yield* registry.remove(a.id)
      const gone = yield* metrics
      expect(valueOf(gone, "effect_lb_locates_total", { server: a.id })).toBeUndefined()
      expect(valueOf(gone, "effect_lb_server_state", { server: a.id, state: "dead" })).toBeUndefined()
      // b is still listed, but dead: its last report (7) is history, and its gauge says 0.
      expect(valueOf(gone, "effect_lb_server_active_connections", { server: b.id })).toBe(0)
    }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive("streams the status as server-sent events, and a change arrives without asking again", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const { address } = yield* Admin.Admin
      yield* registry.add(server("sse", 42061))
      const controller = new AbortController()
      yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
      const events = yield* Effect.promise(async () => {
        const response = await fetch(`http://127.0.0.1:${address.port}/api/events`, { signal: controller.signal })
        return { type: response.headers.get("content-type"), reader: response.body?.getReader() }
      })
      expect(events.type).toMatch(/^text\/event-stream/)
      const reader = events.reader
      if (reader === undefined) return expect.unreachable("no body")
      let buffered = ""
      /** The next event's data, parsed. */
      const next = Effect.promise(async () => {
        for (;;) {
          const end = buffered.indexOf("\n\n")
          if (end >= 0) {
            const event = buffered.slice(0, end)
            buffered = buffered.slice(end + 2)
            return JSON.parse(event.replace(/^data: /, "")) as { servers: Array<{ id: string; state: string }> }
          }
          const chunk = await reader.read()
          if (chunk.done) throw new Error("the event stream ended")
          buffered += new TextDecoder().decode(chunk.value)
        }
      })
      const first = yield* next
      expect(first).toMatchObject({ _tag: "StatusReport", servers: [{ id: "admin-sse", state: "live" }] })
      yield* registry.setState(ServerId.make("admin-sse"), "dead")
      const seen = yield* next.pipe(
        Effect.repeat({ until: (event) => event.servers[0]?.state === "dead" }),
        Effect.timeout("3 seconds")
      )
      expect(seen.servers[0]?.state).toBe("dead")
    }).pipe(Effect.provide(adminLayer()))
  )

  it.scopedLive(
    "reports the balancer (version, uptime, addresses), the proxy's figures, and each server's since, last check and counts",
    () =>
      Effect.gen(function* () {
        const registry = yield* ServerRegistry
        const up = yield* echo
        const downPort = yield* freePort
        yield* registry.add(server("up", up))
        yield* registry.add(server("down", downPort))
        type Encoded = typeof StatusReport.Encoded
        const status = Effect.map(http("GET", "/api/status"), (reply) => reply.json as Encoded)
        const byId = (report: Encoded, id: string) => report.servers.find((s) => s.id === `admin-${id}`)
        const checked = yield* eventually(
          status,
          (report) => byId(report, "up")?.state === "live" && (byId(report, "down")?.failedChecks ?? 0) >= 1,
          "5 seconds"
        )
        const now = Date.now()
        const { address: plane } = yield* ControlPlane.ControlPlane
        const { address: proxy } = yield* Proxy.Proxy
        const { address: admin } = yield* Admin.Admin
        expect(checked.balancer).toMatchObject({
          version: "9.9.9",
          listening: {
            balancer: `127.0.0.1:${plane.port}`,
            proxy: `127.0.0.1:${proxy.port}`,
            admin: `127.0.0.1:${admin.port}`
          }
        })
        expect(checked.balancer?.startedAt).toBeLessThanOrEqual(now)
        expect(checked.balancer?.uptimeSeconds).toBeGreaterThanOrEqual(0)
        expect(byId(checked, "up")?.lastCheck).toMatchObject({
          ok: true,
          result: expect.stringMatching(/^tcp [\d.]+ ms ok$/)
        })
        expect(byId(checked, "down")?.lastCheck).toMatchObject({ ok: false, result: "refused" })
        expect(byId(checked, "up")?.stateSince).toBeLessThanOrEqual(now)
        expect(byId(checked, "up")).toMatchObject({ failedChecks: 0, failedConnects: 0, reroutes: 0, ejections: 0 })

        // One connection through the proxy: counted, bytes each way.
        yield* through(proxy.port, "hello")
        const proxied = yield* eventually(status, (report) => (report.proxy?.bytesOut ?? 0) >= 5, "3 seconds")
        expect(proxied.proxy).toMatchObject({
          open: 0,
          accepted: 1,
          bytesIn: 5,
          bytesOut: 5,
          turnedAway: { limit: 0, noServer: 0, backendsFailed: 0 }
        })
        expect(proxied.proxy?.connectionsPerSecond).toBeGreaterThanOrEqual(0)

        // A client that failed on "up" comes back for another: a re-route. An ejection: live to dead.
        const balancer = yield* Balancer
        yield* Effect.ignore(balancer.determineServer([{ host: Host.make("127.0.0.1"), port: Port.make(up) }]))
        yield* registry.setState(ServerId.make("admin-up"), "dead")
        const counted = yield* status
        expect(byId(counted, "up")).toMatchObject({ reroutes: 1, ejections: 1 })
      }).pipe(Effect.provide(fullAdmin))
  )

  it.scopedLive("serves the last two minutes of picks per server, a sample a second", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const balancer = yield* Balancer
      yield* registry.add(server("h1", 42051))
      yield* registry.add(server("h2", 42052))
      const pick = Effect.ignore(balancer.determineServer())
      yield* Effect.forEach(Array.from({ length: 10 }), () => pick, { discard: true })
      interface History {
        readonly intervalMs: number
        readonly samples: ReadonlyArray<{ readonly at: number; readonly picks: Record<string, number> }>
      }
      const history = Effect.map(http("GET", "/api/history"), (reply) => reply.json as History)
      const first = yield* eventually(history, (h) => h.samples.length >= 1, "3 seconds")
      expect(first.intervalMs).toBe(1000)
      // The sampler started counting when the admin server did: those 10 picks are in the first sample.
      const picked = first.samples.flatMap((sample) => Object.values(sample.picks)).reduce((a, b) => a + b, 0)
      expect(picked).toBe(10)
      expect(first.samples[0]?.picks).toEqual({ "admin-h1": 5, "admin-h2": 5 })
      const more = yield* eventually(history, (h) => h.samples.length >= 2, "3 seconds")
      const [a, b] = more.samples
      expect((b?.at ?? 0) - (a?.at ?? 0)).toBeGreaterThanOrEqual(900)
      // A second with no picks is a sample with none.
      expect(b?.picks).toEqual({})
    }).pipe(Effect.provide(adminLayer()))
  )
})

/** An echo listener on a free port, closed with the scope; its port. */
const echo = echoServer.pipe(Effect.map((listener) => portOf(listener)))

const portOf = (listener: Net.Server) => {
  const address = listener.address()
  return typeof address === "object" && address !== null ? address.port : 0
}

/** A port nothing listens on (it did a moment ago): connects to it are refused. */
const freePort = Effect.async<number>((resume) => {
  const listener = Net.createServer()
  listener.listen(0, "127.0.0.1", () => {
    const port = portOf(listener)
    listener.close(() => resume(Effect.succeed(port)))
  })
})

/** Sends `text` through the proxy, half-closes, and waits for the close. */
const through = (port: number, text: string) =>
  Effect.async<string>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
    let received = ""
    socket.on("data", (chunk: Buffer) => (received += chunk.toString()))
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.succeed(received)))
    socket.end(text)
  })

/** The admin server over a whole balancer: its port, a proxy and TCP health checks. */
const fullAdmin = Admin.layer({ host: "127.0.0.1", port: 0, version: "9.9.9" }).pipe(
  Layer.provideMerge(
    Layer.mergeAll(
      ControlPlane.layer({ ...ControlPlane.defaults, port: 0 }),
      Proxy.layer({ ...Proxy.defaults, port: 0 }),
      HealthMonitor.layer({ ...HealthMonitor.defaults, health: "tcp", probeInterval: Duration.millis(100) })
    )
  ),
  Layer.provideMerge(balancerLayer("round-robin")),
  Layer.provideMerge(Wire.layer)
)
