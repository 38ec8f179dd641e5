/**
 * Probes every server (`Ping` → `Pong`, or a bare TCP connect) and gives the verdict on it, as
 * HAProxy's checks do: `fall` failed probes in a row (the first sent at least `deadAfter` ago) make a
 * live server dead, `rise` answered probes in a row make a dead one live. Only an answer makes a
 * server live: while the monitor runs, a new server is dead until its first probe (sent at once)
 * answers, and registering again proves nothing.
 *
 * One fiber schedules every server's probes from a heap ordered by when each is due, and at most
 * `maxProbes` are in flight at once (a fiber each, only while in flight), so a server costs a small
 * record, not fibers, and a flood of unreachable servers cannot run the balancer out of sockets. Each
 * probe has its own deadline (`deadAfter`), so a stalled server delays no other server's verdict.
 */
import { Clock, Context, Duration, Effect, Either, FiberSet, Layer, Option, Queue, Schema } from "effect"
import { Ping, ServerReply, ServerRequest } from "../../domain/Protocol.js"
import { formatEndpoint, type ServerId, type ServerView } from "../../domain/Server.js"
import * as Metrics from "./Metrics.js"
import { ServerRegistry } from "./ServerRegistry.js"
import { readAnswer } from "../wire/Peer.js"
import { Wire } from "../wire/Wire.js"
import { systemTrust, type TrustRef } from "../wire/Tls.js"

export interface MonitorConfig {
  /** `ping`: the effect-lb Ping/Pong (load and latency come with it); `tcp`: a connect is the probe. */
  readonly health?: "ping" | "tcp"
  /** Pause between the end of one probe of a server and the start of the next. */
  readonly probeInterval: Duration.DurationInput
  /**
   * Each probe's time limit, and how long a live server's probes must have been failing (counted from
   * the sending of the first failed one) before it is dead.
   */
  readonly deadAfter: Duration.DurationInput
  /** Answered probes in a row that make a dead server live (HAProxy's `rise`). */
  readonly rise?: number
  /** Failed probes in a row that make a live server dead, once they span `deadAfter` (HAProxy's `fall`). */
  readonly fall?: number
  /** The CAs a server that speaks TLS (`tls: true`) is checked against (`--backend-ca`); default: the system's. */
  readonly backendTrust?: TrustRef
  /** Probes in flight at once, over all servers; past it, due probes wait their turn. */
  readonly maxProbes?: number
  /**
   * Probes per second, at most, of servers that have never answered; past it, they wait their turn.
   * A flood of registrations for addresses where nothing listens then spreads its refused connects
   * out instead of taking the CPU from everyone else (HAProxy spreads its checks for the same reason).
   */
  readonly newcomerProbesPerSecond?: number
}

export const defaults = {
  probeInterval: Duration.seconds(1),
  deadAfter: Duration.seconds(5),
  rise: 1,
  fall: 1,
  maxProbes: 256,
  newcomerProbesPerSecond: 500
} satisfies MonitorConfig

/** A probe got no good answer: no connection, no `Pong`, or not in time. */
export class ProbeFailed extends Schema.TaggedError<ProbeFailed>()("ProbeFailed", {
  server: Schema.String,
  reason: Schema.String,
  /** The server took the connection (its port is open): something there does not answer `Ping`. */
  connected: Schema.optionalWith(Schema.Boolean, { default: () => false })
}) {}

export class HealthMonitor extends Context.Tag("effect-lb/HealthMonitor")<
  HealthMonitor,
  {
    /** How many servers are being watched. */
    readonly watched: Effect.Effect<number>
    /** How many probes are in flight now. */
    readonly probing: Effect.Effect<number>
    /** New probe settings, from each server's next probe on (a reload): no server's state is lost. */
    readonly reconfigure: (config: Settings) => Effect.Effect<void>
  }
>() {}

/** The probe settings a reload may change. */
export type Settings = Pick<MonitorConfig, "health" | "probeInterval" | "deadAfter" | "rise" | "fall">

/** What watching any server needs, built once; its probe settings change only by `reconfigure`. */
interface Watching {
  readonly registry: ServerRegistry["Type"]
  readonly wire: Wire["Type"]
  readonly trust: TrustRef
  health: MonitorConfig["health"]
  intervalMs: number
  deadAfter: Duration.Duration
  deadAfterMs: number
  rise: number
  fall: number
  /** The longest pause between probes of a server that has never answered. */
  slowestMs: number
}

const probeSettings = (config: Settings) => ({
  health: config.health,
  intervalMs: Duration.toMillis(config.probeInterval),
  deadAfter: Duration.decode(config.deadAfter),
  deadAfterMs: Duration.toMillis(config.deadAfter),
  rise: Math.max(1, config.rise ?? defaults.rise),
  fall: Math.max(1, config.fall ?? defaults.fall),
  slowestMs: Math.max(Duration.toMillis(config.probeInterval), neverAnsweredPause)
})

/** One watched server: where it is, when it is next due, and its run of answers or failures. */
interface Watched {
  readonly server: ServerView
  due: number
  removed: boolean
  /** The monitor's own last verdict, to notice another's (a proxy's ejection) in between. */
  live: boolean
  /** Whether any probe of it has ever answered. */
  seen: boolean
  successes: number
  failures: number
  /** When the first probe of the current run of failures was sent. */
  failingSince: number | undefined
  /** Whether the hint about `--health tcp` was given for it (once per server). */
  hinted: boolean
}

/** A good answer: the round trip in milliseconds, and the load the server reported (not with `tcp`). */
interface Answer {
  readonly roundTripMs: number
  readonly active: number | undefined
  readonly latencyMs: number | undefined
}

/** One probe: connect, Ping, Pong (with `tcp` health, the connect alone), within `deadAfter`. */
const probe = (watching: Watching, server: ServerView): Effect.Effect<Answer, ProbeFailed> =>
  Effect.suspend(() => {
    let connected = false
    return Effect.gen(function* () {
      const started = yield* Clock.currentTimeNanos
      const connection = yield* watching.wire.connect(server, {
        timeout: watching.deadAfter,
        tls: server.tls === true ? watching.trust.current : undefined
      })
      connected = true
      if (watching.health === "tcp") {
        const accepted = yield* Clock.currentTimeNanos
        return { roundTripMs: Number(accepted - started) / 1e6, active: undefined, latencyMs: undefined }
      }
      yield* connection.send(ServerRequest, new Ping())
      const reply = yield* readAnswer(connection, ServerReply).pipe(
        Effect.mapError(({ reason }) => new ProbeFailed({ server: server.id, reason, connected }))
      )
      const answered = yield* Clock.currentTimeNanos
      if (reply._tag !== "Pong") {
        return yield* new ProbeFailed({
          server: server.id,
          reason: `it answered ${reply._tag}, without a Pong`,
          connected
        })
      }
      return { roundTripMs: Number(answered - started) / 1e6, active: reply.active, latencyMs: reply.latencyMs }
    }).pipe(
      Effect.scoped,
      Effect.timeoutFail({
        duration: watching.deadAfter,
        onTimeout: () => new ProbeFailed({ server: server.id, reason: "timed out", connected })
      }),
      Effect.catchIf(
        (error) => error._tag !== "ProbeFailed",
        (error) => Effect.fail(new ProbeFailed({ server: server.id, reason: error.message, connected }))
      )
    )
  })

/**
 * A server that takes the connection but has never answered a `Ping` is most likely not an effect-lb
 * server at all: a plain TCP service given with `--server` and probed the default way. Said once.
 */
const hint = (watching: Watching, watched: Watched, failure: ProbeFailed) => {
  if (watching.health !== "ping" || watched.seen || watched.hinted || !failure.connected) return Effect.void
  watched.hinted = true
  return Effect.logWarning(
    `server ${watched.server.id} (${formatEndpoint(watched.server)}) took the connection but never answered a Ping ` +
      `(${failure.reason}); if it is a plain TCP service, not an effect-lb server, start the balancer with --health tcp`
  )
}

/** A probe's outcome in a few words, as the dashboard shows it: "ping 1.2 ms ok", "refused", "timeout". */
export const checkResult = (health: MonitorConfig["health"], outcome: Answer | ProbeFailed): string => {
  if (!(outcome instanceof ProbeFailed)) {
    const ms = outcome.roundTripMs
    return `${health ?? "ping"} ${ms < 10 ? ms.toFixed(1) : ms.toFixed(0)} ms ok`
  }
  const reason = outcome.reason
  if (reason.includes("ECONNREFUSED")) return "refused"
  if (/timed out|ETIMEDOUT/i.test(reason)) return "timeout"
  if (reason.includes("ECONNRESET")) return "reset"
  if (/EHOSTUNREACH|ENETUNREACH/.test(reason)) return "unreachable"
  if (reason.includes("without a Pong")) return "no Pong"
  return reason.slice(0, 200)
}

/** An answer: recorded; a dead server that has answered `rise` probes in a row is live. */
const answered = (watching: Watching, watched: Watched, state: ServerView["state"], answer: Answer, now: number) =>
  Effect.gen(function* () {
    const { server } = watched
    watched.failures = 0
    watched.failingSince = undefined
    watched.successes += 1
    watched.seen = true
    Metrics.unsafeProbed(server.id, answer.roundTripMs)
    yield* watching.registry.recordCheck(server.id, { at: now, ok: true, result: checkResult(watching.health, answer) })
    yield* watching.registry.recordProbe(server.id, answer.roundTripMs, answer.active, answer.latencyMs, now)
    if (state === "dead" && watched.successes >= watching.rise) {
      // An ejected server (passive health) stays dead until its ejection time is out.
      const after = yield* watching.registry.setState(server.id, "live")
      watched.live = Option.exists(after, (view) => view.state === "live")
      if (watched.live) yield* Effect.logInfo(`server ${server.id} answers: live`)
    }
  })

/** A failure: a live server whose probes have failed `fall` times in a row, for `deadAfter`, is dead. */
const failed = (
  watching: Watching,
  watched: Watched,
  state: ServerView["state"],
  failure: ProbeFailed,
  sentAt: number,
  now: number
) =>
  Effect.gen(function* () {
    const { server } = watched
    Metrics.unsafeCheckFailed(server.id)
    yield* watching.registry.recordCheck(server.id, {
      at: now,
      ok: false,
      result: checkResult(watching.health, failure)
    })
    watched.successes = 0
    watched.failures += 1
    watched.failingSince ??= sentAt
    const failingFor = now - watched.failingSince
    if (state === "live" && watched.failures >= watching.fall && failingFor >= watching.deadAfterMs) {
      yield* watching.registry.setState(server.id, "dead")
      watched.live = false
      yield* Effect.logWarning(
        `server ${server.id} has failed ${watched.failures} probe(s) over ${Duration.format(Duration.millis(failingFor))}: dead`
      )
    }
  })

/** One probe of `watched` and its verdict; returns when the server is next due. */
const probeOnce = (watching: Watching, watched: Watched) =>
  Effect.gen(function* () {
    const sentAt = yield* Clock.currentTimeMillis
    const result = yield* Effect.either(probe(watching, watched.server))
    const now = yield* Clock.currentTimeMillis
    const current = yield* watching.registry.get(watched.server.id)
    // Removed, or replaced by a server at another address (watched as a new one) while probing.
    if (watched.removed || Option.isNone(current)) return now
    const state = current.value.state
    // Made dead by someone else (a proxy's failed connect): the run of answers starts again.
    if (state === "dead" && watched.live) watched.successes = 0
    watched.live = state === "live"
    if (Either.isRight(result)) {
      yield* answered(watching, watched, state, result.right, now)
      return now + watching.intervalMs
    }
    yield* Effect.logDebug(`probe of ${watched.server.id} failed`, result.left)
    yield* hint(watching, watched, result.left)
    yield* failed(watching, watched, state, result.left, sentAt, now)
    // A server that has never answered is probed less often the longer it fails: a flood of
    // unreachable servers costs a handful of probes each before they are removed, not one per interval.
    if (!watched.seen) {
      return now + Math.min(watching.intervalMs * 2 ** Math.min(watched.failures - 1, 20), watching.slowestMs)
    }
    // A failing live server is probed again when its failures would span `deadAfter`, not later.
    const deadline = watched.live ? (watched.failingSince ?? 0) + watching.deadAfterMs : 0
    return deadline > now ? Math.min(now + watching.intervalMs, deadline) : now + watching.intervalMs
  }).pipe(Effect.annotateLogs({ server: watched.server.id }))

/** A binary min-heap of watched servers by when they are due. */
class DueHeap {
  private readonly items: Array<Watched> = []
  get size() {
    return this.items.length
  }
  peek(): Watched | undefined {
    return this.items[0]
  }
  push(item: Watched) {
    const items = this.items
    let i = items.push(item) - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      const above = items[parent]
      if (above === undefined || above.due <= item.due) break
      items[i] = above
      i = parent
    }
    items[i] = item
  }
  pop(): Watched | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (top === undefined || last === undefined || items.length === 0) return top
    let i = 0
    while (true) {
      const left = 2 * i + 1
      const right = left + 1
      let smallest = last
      let at = -1
      const l = items[left]
      const r = items[right]
      if (l !== undefined && l.due < smallest.due) {
        smallest = l
        at = left
      }
      if (r !== undefined && r.due < smallest.due) {
        smallest = r
        at = right
      }
      if (at === -1) break
      items[i] = smallest
      i = at
    }
    items[i] = last
    return top
  }
}

/** A new record for `server`, due at once. */
const watchedFrom = (server: ServerView): Watched => ({
  server,
  due: 0,
  removed: false,
  live: server.state === "live",
  seen: server.lastSeenAt !== null && server.lastSeenAt !== undefined,
  successes: 0,
  failures: 0,
  failingSince: undefined,
  hinted: false
})

/**
 * The pace of probes of servers that have never answered: a bucket of `perSecond` tokens, refilled
 * as time passes; a probe that finds it empty is given the next free slot, `1 / perSecond` apart.
 */
class NewcomerPace {
  private tokens: number
  private refilledAt = 0
  private nextSlot = 0
  constructor(private readonly perSecond: number) {
    this.tokens = perSecond
  }
  /** `undefined`: go now; a time: wait until then. */
  slot(now: number): number | undefined {
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.refilledAt) * this.perSecond) / 1000)
    this.refilledAt = now
    if (this.tokens >= 1) {
      this.tokens -= 1
      return undefined
    }
    this.nextSlot = Math.max(this.nextSlot, now) + 1000 / this.perSecond
    return this.nextSlot
  }
}

/**
 * The one scheduler: the watched servers in a heap by when each is due, and a loop that starts the
 * due probes (at most `maxProbes` at once, newcomers at their pace) and sleeps until the next is
 * due or something changes.
 */
const makeScheduler = (watching: Watching, maxProbes: number, pace: NewcomerPace) =>
  Effect.gen(function* () {
    const watched = new Map<ServerId, Watched>()
    const heap = new DueHeap()
    // Something changed that the scheduler may be sleeping past: a server due now, a probe slot free.
    const wake = yield* Queue.sliding<void>(1)
    const probes = yield* FiberSet.make()
    let inFlight = 0

    const launch = (record: Watched) =>
      probeOnce(watching, record).pipe(
        Effect.flatMap((due) =>
          Effect.sync(() => {
            if (record.removed) return
            record.due = due
            heap.push(record)
          })
        ),
        Effect.ensuring(
          Effect.sync(() => {
            inFlight -= 1
            wake.unsafeOffer(undefined)
          })
        )
      )

    /** Starts every probe that is due, as slots allow; then sleeps until the next is due or a wake. */
    const step = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      let next = heap.peek()
      while (next !== undefined && next.due <= now && inFlight < maxProbes) {
        heap.pop()
        const wait = next.seen || next.removed ? undefined : pace.slot(now)
        if (wait !== undefined) {
          next.due = wait
          heap.push(next)
        } else if (!next.removed) {
          inFlight += 1
          yield* FiberSet.run(probes, launch(next))
        }
        next = heap.peek()
      }
      const wait = Queue.take(wake)
      yield* next === undefined || inFlight >= maxProbes
        ? wait
        : Effect.race(wait, Effect.sleep(Duration.millis(next.due - now)))
    })

    return {
      run: Effect.forever(step),
      follow: (server: ServerView) => {
        const previous = watched.get(server.id)
        if (previous !== undefined) previous.removed = true
        const record = watchedFrom(server)
        watched.set(server.id, record)
        heap.push(record)
        wake.unsafeOffer(undefined)
      },
      forget: (id: ServerId) => {
        const record = watched.get(id)
        if (record === undefined) return
        record.removed = true
        watched.delete(id)
      },
      watched: () => watched.size,
      inFlight: () => inFlight
    }
  })

/**
 * The longest pause between probes of a server that has never answered (unless the probe interval
 * is longer): doubling up to a minute costs such a server five probes in its first 30 s instead of
 * eight at a pause capped at dead-after, and the reaper removes it after `--remove-dead-after`.
 */
const neverAnsweredPause = 60_000

export const make = (config: MonitorConfig) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const watching: Watching = {
      registry,
      wire: yield* Wire,
      trust: config.backendTrust ?? { current: systemTrust },
      ...probeSettings(config)
    }
    const scheduler = yield* makeScheduler(
      watching,
      Math.max(1, config.maxProbes ?? defaults.maxProbes),
      new NewcomerPace(Math.max(1, config.newcomerProbesPerSecond ?? defaults.newcomerProbesPerSecond))
    )
    const known = yield* registry.watch({ added: scheduler.follow, removed: scheduler.forget })
    for (const server of known) scheduler.follow(server)
    yield* Effect.forkScoped(scheduler.run)
    return HealthMonitor.of({
      watched: Effect.sync(scheduler.watched),
      probing: Effect.sync(scheduler.inFlight),
      reconfigure: (settings) => Effect.sync(() => Object.assign(watching, probeSettings(settings)))
    })
  })

export const layer = (config: MonitorConfig = defaults): Layer.Layer<HealthMonitor, never, ServerRegistry | Wire> =>
  Layer.scoped(HealthMonitor, make(config))
