import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Layer, Logger, MetricState, Option, Ref, Scope, TestClock } from "effect"
import * as Http from "node:http"
import { Busy } from "../../../src/domain/Errors.js"
import { Pong, ServerReply, ServerRequest } from "../../../src/domain/Protocol.js"
import { Port, ServerId, type ServerSpec } from "../../../src/domain/Server.js"
import * as HealthMonitor from "../../../src/services/balancer/HealthMonitor.js"
import * as Metrics from "../../../src/services/balancer/Metrics.js"
import { ServerRegistry } from "../../../src/services/balancer/ServerRegistry.js"
import * as ServerRegistryModule from "../../../src/services/balancer/ServerRegistry.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { type Behaviour, fakeServer, spec } from "../../support/balancer.js"

const monitoredWith = (config: Partial<HealthMonitor.MonitorConfig> = {}) =>
  HealthMonitor.layer({ ...HealthMonitor.defaults, ...config }).pipe(
    Layer.provideMerge(ServerRegistryModule.layer()),
    Layer.provideMerge(Wire.layerMemory)
  )
const monitored = monitoredWith()

const viewOf = (id: string) =>
  Effect.flatMap(ServerRegistry, (registry) => registry.list).pipe(
    Effect.map((servers) => servers.find((server) => server.id === id))
  )
const stateOf = (id: string) => Effect.map(viewOf(id), (server) => server?.state)

const ejectionsOf = (id: string) => Effect.sync(() => Metrics.unsafeSeriesOf(ServerId.make(id))?.ejections ?? 0)

/** A server that answers every Ping with a Pong `delay` after it arrives. Returns a count of answers. */
const slowServer = (server: ServerSpec, delay: Duration.DurationInput) =>
  Effect.gen(function* () {
    const wire = yield* Wire.Wire
    const answers = yield* Ref.make(0)
    yield* wire.serve({ host: server.host, port: server.port }, (connection) =>
      Effect.gen(function* () {
        const request = yield* connection.read(ServerRequest)
        if (Option.isNone(request)) return
        yield* Effect.sleep(delay)
        yield* connection.send(ServerReply, new Pong({ id: server.id, active: 7 }))
        yield* Ref.update(answers, (n) => n + 1)
      }).pipe(Effect.ignore)
    )
    return answers
  })

/** A fake server that behaves as told (through the returned Ref), added to the registry. */
const registered = (server: ServerSpec, initially: Behaviour = "healthy") =>
  Effect.gen(function* () {
    const behaviour = yield* Ref.make<Behaviour>(initially)
    yield* fakeServer(server, behaviour)
    yield* (yield* ServerRegistry).add(server)
    return behaviour
  })

/** Lets the monitor's fibers run without moving the clock. */
const settle = TestClock.adjust(Duration.zero)

describe("HealthMonitor on the test clock", () => {
  it.scoped("never turns a server that answers every Ping within 4.5 s dead, over 60 s", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const ejectedBefore = yield* ejectionsOf("s1")
      const answers = yield* slowServer(spec(1), "4500 millis")
      yield* registry.add(spec(1))
      yield* TestClock.adjust("4500 millis")
      expect(yield* stateOf("s1")).toBe("live")
      for (let second = 5; second <= 60; second++) {
        yield* TestClock.adjust("500 millis")
        expect(yield* stateOf("s1")).toBe("live")
        yield* TestClock.adjust("500 millis")
        expect(yield* stateOf("s1")).toBe("live")
      }
      // One probe every 5.5 s (4.5 s to answer, 1 s pause), every one of them answered in time.
      expect(yield* Ref.get(answers)).toBe(11)
      expect((yield* ejectionsOf("s1")) - ejectedBefore).toBe(0)
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("marks a server that stops answering dead exactly 5 s after the first probe it leaves unanswered", () =>
    Effect.gen(function* () {
      const behaviour = yield* registered(spec(1))
      yield* TestClock.adjust("10500 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* Ref.set(behaviour, "stalled")
      // The next probe goes out at 11 s and is never answered: dead at 16 s, not 15.999.
      yield* TestClock.adjust("5499 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("dead")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("marks a server that refuses connections dead 5 s after its first refused probe", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const listening = yield* Scope.make()
      yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("healthy")).pipe(Scope.extend(listening))
      yield* registry.add(spec(1))
      yield* TestClock.adjust("10500 millis")
      yield* Scope.close(listening, Exit.void)
      // Refused at 11 s, 12 s, … 15 s: still live; the one at 16 s makes 5 s of failures.
      yield* TestClock.adjust("5499 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("dead")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("keeps a server that answers live, and measures its round trip", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const probed = Effect.sync(() => Metrics.unsafeSeriesOf(ServerId.make("s1"))?.probes ?? 0)
      const probedBefore = yield* probed
      const pings = yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(1))
      yield* TestClock.adjust("20 seconds")
      expect(yield* stateOf("s1")).toBe("live")
      expect(yield* Ref.get(pings)).toBeGreaterThanOrEqual(20)
      const server = yield* registry.get(spec(1).id)
      expect(Option.map(server, (s) => s.responseTimeMs)).toEqual(Option.some(0))
      expect(Option.map(server, (s) => s.lastSeenAt)).toEqual(Option.some(20_000))
      // Every answered probe is counted in the server's round-trip histogram.
      expect((yield* probed) - probedBefore).toBe(yield* Ref.get(pings))
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("counts rise answers in a row to bring a server in and fall failures in a row to eject it", () =>
    Effect.gen(function* () {
      const behaviour = yield* registered(spec(1))
      // rise 3: answers at 0 s, 1 s and 2 s; live with the third.
      yield* TestClock.adjust("1999 millis")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* TestClock.adjust("8500 millis")
      yield* Ref.set(behaviour, "stalled")
      // fall 2: probes sent at 11 s (fails at 16 s) and 17 s (fails at 22 s); dead with the second.
      yield* TestClock.adjust("11499 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* TestClock.adjust("500 millis")
      yield* Ref.set(behaviour, "healthy")
      // Answers at 23 s, 24 s and 25 s.
      yield* TestClock.adjust("2499 millis")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("live")
    }).pipe(Effect.provide(monitoredWith({ rise: 3, fall: 2 })))
  )

  it.scoped("brings a dead server back to live when it answers again", () =>
    Effect.gen(function* () {
      const behaviour = yield* registered(spec(1))
      yield* TestClock.adjust("500 millis")
      yield* Ref.set(behaviour, "stalled")
      yield* TestClock.adjust("7 seconds")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* Ref.set(behaviour, "healthy")
      yield* TestClock.adjust("6 seconds")
      expect(yield* stateOf("s1")).toBe("live")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("never lets a stalled server delay another server's probes", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("stalled"))
      const healthyPings = yield* fakeServer(spec(2), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(1))
      yield* registry.add(spec(2))
      for (let second = 1; second <= 10; second++) {
        yield* TestClock.adjust("1 second")
        // One probe a second, on time, whatever the stalled server does.
        expect(yield* Ref.get(healthyPings)).toBe(second + 1)
      }
      expect(yield* stateOf("s1")).toBe("dead")
      expect(yield* stateOf("s2")).toBe("live")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("stops probing a server once it is removed", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const monitor = yield* HealthMonitor.HealthMonitor
      const pings = yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(1))
      yield* TestClock.adjust("2 seconds")
      expect(yield* monitor.watched).toBe(1)
      yield* registry.remove(spec(1).id)
      const before = yield* Ref.get(pings)
      yield* TestClock.adjust("5 seconds")
      expect(yield* Ref.get(pings)).toBe(before)
      expect(yield* monitor.watched).toBe(0)
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("with tcp health, a server that accepts connections is live even if it speaks no effect-lb", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      // Stalled: accepts and never answers a Ping — dead for `ping` health, alive for `tcp`.
      yield* fakeServer(spec(1), yield* Ref.make<Behaviour>("stalled"))
      yield* registry.add(spec(1))
      yield* TestClock.adjust("10 seconds")
      expect(yield* stateOf("s1")).toBe("live")
      const server = yield* registry.get(spec(1).id)
      expect(Option.map(server, (s) => s.responseTimeMs)).toEqual(Option.some(0))
      // Nothing listens at s2's address: no connect, never live.
      yield* registry.add(spec(2))
      yield* TestClock.adjust("5 seconds")
      expect(yield* stateOf("s2")).toBe("dead")
    }).pipe(Effect.provide(monitoredWith({ health: "tcp" })))
  )

  it.scoped("uses the configured probe interval and dead-after", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const behaviour = yield* Ref.make<Behaviour>("healthy")
      const pings = yield* fakeServer(spec(1), behaviour)
      yield* registry.add(spec(1))
      // A probe at once, then one every 250 ms: exactly, not the default second.
      yield* settle
      expect(yield* Ref.get(pings)).toBe(1)
      for (let tick = 1; tick <= 4; tick++) {
        yield* TestClock.adjust("250 millis")
        expect(yield* Ref.get(pings)).toBe(tick + 1)
      }
      yield* TestClock.adjust("100 millis")
      yield* Ref.set(behaviour, "stalled")
      // Sent at 1.25 s, unanswered: dead at 3.25 s.
      yield* TestClock.adjust("2149 millis")
      expect(yield* stateOf("s1")).toBe("live")
      yield* TestClock.adjust("1 millis")
      expect(yield* stateOf("s1")).toBe("dead")
    }).pipe(Effect.provide(monitoredWith({ probeInterval: "250 millis", deadAfter: "2 seconds" })))
  )

  it.scoped("keeps at most maxProbes probes in flight, and still probes the others in turn", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const monitor = yield* HealthMonitor.HealthMonitor
      for (let n = 1; n <= 20; n++) yield* fakeServer(spec(n), yield* Ref.make<Behaviour>("stalled"))
      const pings = yield* fakeServer(spec(21), yield* Ref.make<Behaviour>("healthy"))
      for (let n = 1; n <= 21; n++) yield* registry.add(spec(n))
      let most = 0
      for (let tick = 0; tick < 300; tick++) {
        yield* TestClock.adjust("100 millis")
        most = Math.max(most, yield* monitor.probing)
      }
      expect(most).toBe(4)
      expect(yield* Ref.get(pings)).toBeGreaterThan(0)
      expect(yield* stateOf("s21")).toBe("live")
    }).pipe(Effect.provide(monitoredWith({ maxProbes: 4 })))
  )
})

describe("Only a probe answer makes a server live", () => {
  it.scoped("paces the probes of servers that have never answered: a flood of them cannot take the CPU", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const wire = yield* Wire.Wire
      const probes = yield* Ref.make(0)
      // Fifty servers that answer every probe at once with something that is not a Pong.
      for (let n = 1; n <= 50; n++) {
        yield* wire.serve({ host: spec(n).host, port: spec(n).port }, (connection) =>
          Effect.gen(function* () {
            yield* Ref.update(probes, (count) => count + 1)
            yield* connection.send(ServerReply, new Busy({ message: "full" }))
          }).pipe(Effect.ignore)
        )
        yield* registry.add(spec(n))
      }
      // Ten a second: a burst of ten at once, then one every 100 ms — not fifty at once.
      yield* settle
      expect(yield* Ref.get(probes)).toBe(10)
      yield* TestClock.adjust("1 second")
      expect(yield* Ref.get(probes)).toBe(20)
      // A real server joining now waits its turn among them, and is live once its probe answers.
      yield* slowServer(spec(51), "1 millis")
      yield* registry.add(spec(51))
      yield* settle
      expect(yield* stateOf("s51")).toBe("dead")
      yield* TestClock.adjust("9 seconds")
      expect(yield* stateOf("s51")).toBe("live")
      // Ten seconds in: the burst of ten and ten a second, never more (retries are newcomers' probes too).
      expect(yield* Ref.get(probes)).toBeLessThanOrEqual(10 + 10 * 10 - 1)
      expect(yield* Ref.get(probes)).toBeGreaterThanOrEqual(50)
    }).pipe(Effect.provide(monitoredWith({ newcomerProbesPerSecond: 10 })))
  )

  it.scoped("probes a server that has never answered less and less often, down to once a minute", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const wire = yield* Wire.Wire
      const probes = yield* Ref.make(0)
      // Answers every probe at once, with something that is not a Pong.
      yield* wire.serve({ host: spec(1).host, port: spec(1).port }, (connection) =>
        Effect.gen(function* () {
          yield* Ref.update(probes, (n) => n + 1)
          yield* connection.send(ServerReply, new Busy({ message: "full" }))
        }).pipe(Effect.ignore)
      )
      yield* registry.add(spec(1))
      yield* TestClock.adjust("29999 millis")
      // At 0, 1, 3, 7 and 15 s, not 30 times; then at 31 s, 63 s and once a minute.
      expect(yield* Ref.get(probes)).toBe(5)
      yield* TestClock.adjust("63001 millis")
      expect(yield* Ref.get(probes)).toBe(7)
      yield* TestClock.adjust("60 seconds")
      expect(yield* Ref.get(probes)).toBe(8)
      expect(yield* stateOf("s1")).toBe("dead")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("a real server is dead until its first probe answers, and live right after it", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* slowServer(spec(1), "3 millis")
      const added = yield* registry.add(spec(1))
      expect(added.state).toBe("dead")
      expect(added.lastSeenAt).toBe(null)
      yield* TestClock.adjust("3 millis")
      expect(yield* viewOf("s1")).toMatchObject({ state: "live", active: 7, lastSeenAt: 3 })
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("registering again and again for an address where nothing listens never makes it live", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      for (let i = 0; i < 60; i++) {
        yield* registry.add(spec(1))
        expect(registry.unsafeLive()).toEqual([])
        yield* TestClock.adjust("700 millis")
        expect(registry.unsafeLive()).toEqual([])
        expect(yield* stateOf("s1")).toBe("dead")
      }
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("registering again keeps the verdict: a live server stays live, a failing one dies on time", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const behaviour = yield* registered(spec(1))
      yield* TestClock.adjust("500 millis")
      const again = yield* registry.add(spec(1))
      expect(again.state).toBe("live")
      yield* TestClock.adjust("10 seconds")
      yield* Ref.set(behaviour, "stalled")
      // Unanswered from 11 s: a Register every second does not restart the count; dead at 16 s.
      for (let i = 0; i < 5; i++) {
        yield* TestClock.adjust("1 second")
        yield* registry.add(spec(1))
        expect(yield* stateOf("s1")).toBe("live")
      }
      yield* TestClock.adjust("500 millis")
      expect(yield* stateOf("s1")).toBe("dead")
      yield* registry.add(spec(1))
      expect(yield* stateOf("s1")).toBe("dead")
    }).pipe(Effect.provide(monitored))
  )

  it.scoped("servers added before the monitor started are not live until they answer", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      const layer = HealthMonitor.layer()
      yield* registry.add(spec(1))
      yield* fakeServer(spec(2), yield* Ref.make<Behaviour>("healthy"))
      yield* registry.add(spec(2))
      expect(yield* stateOf("s1")).toBe("live")
      yield* Layer.build(layer)
      yield* settle
      expect(yield* stateOf("s1")).toBe("dead")
      expect(yield* stateOf("s2")).toBe("live")
    }).pipe(Effect.provide(ServerRegistryModule.layer().pipe(Layer.provideMerge(Wire.layerMemory))))
  )
})

describe("A dead server shows what is known, not stale figures", () => {
  it.scoped("shows no active connections and when it was last seen, and its gauge drops to 0", () =>
    Effect.gen(function* () {
      const registry = yield* ServerRegistry
      yield* slowServer(spec(1), Duration.zero)
      yield* registry.add(spec(1))
      yield* TestClock.adjust("2500 millis")
      yield* registry.reportLoad(spec(1).id, 42)
      expect(yield* viewOf("s1")).toMatchObject({ state: "live", active: 42, lastSeenAt: 2000 })
      const gauge = Effect.map(registry.list, (servers) =>
        Metrics.unsafeServerPairs(servers).flatMap(({ metricKey, metricState }) =>
          metricKey.name === Metrics.activeConnections.name &&
          metricKey.tags.some((tag) => tag.key === "server" && tag.value === "s1") &&
          MetricState.isGaugeState(metricState)
            ? [metricState.value]
            : []
        )
      )
      expect(yield* gauge).toEqual([42])
      yield* registry.setState(spec(1).id, "dead")
      expect(yield* viewOf("s1")).toMatchObject({ state: "dead", active: 0, lastSeenAt: 2000 })
      expect(yield* gauge).toEqual([0])
    }).pipe(Effect.provide(monitored))
  )
})

describe("HealthMonitor and a plain TCP service (real loopback sockets)", () => {
  /** An HTTP server on a free port for the test's length. */
  const httpServer = Effect.acquireRelease(
    Effect.async<Http.Server>((resume) => {
      const server = Http.createServer((_, response) => response.end("hello"))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
      })
  ).pipe(
    Effect.map((server) => {
      const address = server.address()
      return typeof address === "object" && address !== null ? address.port : 0
    })
  )

  const probedFor = (health: "ping" | "tcp") =>
    Effect.gen(function* () {
      const logs: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") logs.push((Array.isArray(message) ? message : [message]).join(" "))
      })
      const port = yield* httpServer
      const server = { ...spec(1), port: Port.make(port) }
      const state = yield* Layer.build(
        HealthMonitor.layer({ ...HealthMonitor.defaults, health, probeInterval: Duration.millis(30) }).pipe(
          Layer.provideMerge(ServerRegistryModule.layer()),
          Layer.provideMerge(Wire.layer),
          Layer.provide(Logger.replace(Logger.defaultLogger, logger))
        )
      ).pipe(
        Effect.flatMap((context) =>
          Effect.gen(function* () {
            yield* (yield* ServerRegistry).add(server, "configured")
            // Probes of a server that never answered back off: 30, 60, 120, 240 ms... several in 700 ms.
            yield* Effect.sleep("700 millis")
            return yield* stateOf("s1")
          }).pipe(Effect.provide(context))
        )
      )
      return { logs, port, state }
    })

  it.scopedLive("an HTTP server probed with Ping gets one hint to use --health tcp, not one per probe", () =>
    Effect.gen(function* () {
      const { logs, port } = yield* probedFor("ping")
      expect(logs).toEqual([
        `server s1 (127.0.0.1:${port}) took the connection but never answered a Ping (it answered: HTTP/1.1 400 Bad Request); ` +
          "if it is a plain TCP service, not an effect-lb server, start the balancer with --health tcp"
      ])
    })
  )

  it.scopedLive("probed with --health tcp, the same server is live and gets no hint", () =>
    Effect.gen(function* () {
      const { logs, state } = yield* probedFor("tcp")
      expect(logs).toEqual([])
      expect(state).toBe("live")
    })
  )
})
