/**
 * Probes every server (`Ping` → `Pong`) on a `Schedule`, measures the round trip with the `Clock`,
 * marks a server dead once it has not answered for `deadAfter`, and live again when it answers.
 * Each server has its own fibers, so a slow or stalled server never delays another's probes.
 */
import { Clock, Context, Duration, Effect, FiberMap, Layer, Option, Queue, Schedule, Schema } from "effect"
import { Ping, ServerReply, ServerRequest } from "../../domain/Protocol.js"
import type { ServerView } from "../../domain/Server.js"
import * as Metrics from "./Metrics.js"
import { ServerRegistry } from "./ServerRegistry.js"
import { Wire } from "../wire/Wire.js"

export interface MonitorConfig {
  /** `ping`: the effect-lb Ping/Pong (load and latency come with it); `tcp`: a connect is the probe. */
  readonly health?: "ping" | "tcp"
  readonly probeInterval: Duration.DurationInput
  /** Silence after which a server is dead. */
  readonly deadAfter: Duration.DurationInput
}

export const defaults: MonitorConfig = { probeInterval: Duration.seconds(1), deadAfter: Duration.seconds(5) }

/** A probe got no good answer: no connection, no `Pong`, or not in time. */
export class ProbeFailed extends Schema.TaggedError<ProbeFailed>()("ProbeFailed", {
  server: Schema.String,
  reason: Schema.String
}) {}

export class HealthMonitor extends Context.Tag("effect-lb/HealthMonitor")<
  HealthMonitor,
  {
    /** How many servers are being watched. */
    readonly watched: Effect.Effect<number>
  }
>() {}

/** What watching any server needs, built once. */
interface Watching {
  readonly registry: ServerRegistry["Type"]
  readonly wire: Wire["Type"]
  readonly health: MonitorConfig["health"]
  readonly interval: Duration.Duration
  readonly deadAfter: Duration.Duration
}

/** A good answer: the round trip in milliseconds, and the load the server reported (not with `tcp`). */
interface Answer {
  readonly roundTripMs: number
  readonly active: number | undefined
  readonly latencyMs: number | undefined
}

/** One probe: connect, Ping, Pong (with `tcp` health, the connect alone), within `deadAfter`. */
const probe = (watching: Watching, server: ServerView): Effect.Effect<Answer, ProbeFailed> =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeNanos
    const connection = yield* watching.wire.connect(server, { timeout: watching.deadAfter })
    if (watching.health === "tcp") {
      const connected = yield* Clock.currentTimeNanos
      return { roundTripMs: Number(connected - started) / 1e6, active: undefined, latencyMs: undefined }
    }
    yield* connection.send(ServerRequest, new Ping())
    const reply = yield* connection.read(ServerReply)
    const answered = yield* Clock.currentTimeNanos
    if (Option.isNone(reply) || reply.value._tag !== "Pong") {
      return yield* new ProbeFailed({ server: server.id, reason: "answered without a Pong" })
    }
    return {
      roundTripMs: Number(answered - started) / 1e6,
      active: reply.value.active,
      latencyMs: reply.value.latencyMs
    }
  }).pipe(
    Effect.scoped,
    Effect.timeoutFail({
      duration: watching.deadAfter,
      onTimeout: () => new ProbeFailed({ server: server.id, reason: "timed out" })
    }),
    Effect.catchIf(
      (error) => error._tag !== "ProbeFailed",
      (error) => Effect.fail(new ProbeFailed({ server: server.id, reason: error.message }))
    )
  )

/** The verdict on an answer: recorded, and a dead server is live again. */
const answered = (watching: Watching, server: ServerView, { roundTripMs, active, latencyMs }: Answer) =>
  Effect.gen(function* () {
    Metrics.unsafeProbed(server.id, roundTripMs)
    const before = yield* watching.registry.get(server.id)
    yield* watching.registry.recordProbe(server.id, roundTripMs, active, latencyMs)
    if (Option.isSome(before) && before.value.state === "dead") {
      yield* Effect.logInfo(`server ${server.id} answers again: live`)
    }
  })

/** The verdict on `deadAfter` of silence: a live server is dead. */
const silent = (watching: Watching, server: ServerView) =>
  Effect.gen(function* () {
    const current = yield* watching.registry.get(server.id)
    if (Option.isSome(current) && current.value.state === "live") {
      yield* watching.registry.setState(server.id, "dead")
      yield* Effect.logWarning(`server ${server.id} has not answered for ${Duration.format(watching.deadAfter)}: dead`)
    }
  })

/** Watches one server: probes it every `interval`, and a watchdog judges its silence. */
const watch = (watching: Watching, server: ServerView) =>
  Effect.gen(function* () {
    const deadAfterMs = Duration.toMillis(watching.deadAfter)
    let lastAnswer = yield* Clock.currentTimeMillis
    const prober = probe(watching, server).pipe(
      Effect.matchEffect({
        onFailure: (error) => Effect.logDebug(`probe of ${server.id} failed`, error),
        onSuccess: (answer) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            lastAnswer = now
            return answered(watching, server, answer)
          })
      }),
      Effect.repeat(Schedule.spaced(watching.interval))
    )
    // The watchdog wakes exactly when the silence would reach `deadAfter`.
    const watchdog = Effect.gen(function* () {
      while (true) {
        const silentFor = (yield* Clock.currentTimeMillis) - lastAnswer
        if (silentFor < deadAfterMs) {
          yield* Effect.sleep(Duration.millis(deadAfterMs - silentFor))
          continue
        }
        yield* silent(watching, server)
        yield* Effect.sleep(watching.interval)
      }
    })
    yield* Effect.all([prober, watchdog], { concurrency: 2, discard: true })
  }).pipe(Effect.annotateLogs({ server: server.id }))

export const make = (config: MonitorConfig) =>
  Effect.gen(function* () {
    const watching: Watching = {
      registry: yield* ServerRegistry,
      wire: yield* Wire,
      health: config.health,
      interval: Duration.decode(config.probeInterval),
      deadAfter: Duration.decode(config.deadAfter)
    }
    const watchers = yield* FiberMap.make<string>()
    const follow = (server: ServerView) => FiberMap.run(watchers, server.id, watch(watching, server))

    // Subscribe before reading the list, so no server added in between is missed.
    const changes = yield* watching.registry.subscribe
    for (const server of yield* watching.registry.list) yield* follow(server)
    yield* Queue.take(changes).pipe(
      Effect.flatMap((change) =>
        change._tag === "Added"
          ? follow(change.server)
          : change._tag === "Removed"
            ? FiberMap.remove(watchers, change.server.id)
            : Effect.void
      ),
      Effect.forever,
      Effect.forkScoped
    )

    return HealthMonitor.of({ watched: FiberMap.size(watchers) })
  })

export const layer = (config: MonitorConfig = defaults): Layer.Layer<HealthMonitor, never, ServerRegistry | Wire> =>
  Layer.scoped(HealthMonitor, make(config))
