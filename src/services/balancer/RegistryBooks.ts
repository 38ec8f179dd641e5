/**
 * The server registry's books (`ServerRegistry.ts` is the service over them): what is known of each
 * server (an `Entry`), how it is shown (`view`) and offered to the strategies (`candidate`), and every
 * change as one synchronous step over the books — adding, refreshing, removing, a state, a weight, a
 * load report, a probe's answer, traffic failures and ejections, slow start's ramp, a reload's
 * retuning. Also the registry's types and settings, which the service re-exports.
 */
import { Clock, Duration, Effect, Fiber, Option, PubSub, Schedule, type Scope } from "effect"
import { Busy } from "../../domain/Errors.js"
import {
  formatEndpoint,
  type LastCheck,
  type ServerId,
  type ServerLocation,
  type ServerSpec,
  type ServerState,
  type ServerView,
  type Weight
} from "../../domain/Server.js"
import * as Metrics from "./Metrics.js"
import type { Candidate } from "./strategies/Strategy.js"

export type RegistryChange =
  | { readonly _tag: "Added"; readonly server: ServerView }
  | { readonly _tag: "Updated"; readonly server: ServerView }
  | { readonly _tag: "Removed"; readonly server: ServerView }

/**
 * One registration of a server. A later one for the same id or the same address supersedes it: from
 * then on, what is asked in its name (a report, a drain, a removal) changes nothing.
 */
export interface Registration {
  readonly id: ServerId
  /** Tells this registration from every other, earlier or later, in this registry. */
  readonly generation: number
}

/** A server named by id (whichever registration is in force) or by one registration (only while it is). */
export type ServerRef = ServerId | Registration

/** Called inside the registry's update, before it returns: must be quick and must not throw. */
export type Observer = (id: ServerId, candidate: Candidate | undefined) => void

/** A health monitor, told synchronously (quick, never throwing) of every server that joins or leaves. */
export interface Watcher {
  readonly added: (server: ServerView) => void
  readonly removed: (id: ServerId) => void
}

/**
 * How a server came to be known: `registered` over a control connection (it may be removed once
 * dead for long), `configured` by an operator (`--server`, the admin API: it stays), or from the
 * settings `file` (it stays, and a reload that no longer lists it drains it).
 */
export type Origin = "registered" | "configured" | "file"

interface Entry {
  spec: ServerSpec
  /** Which registration of the server this is: a newer one supersedes whoever holds an older. */
  generation: number
  state: ServerState
  origin: Origin
  /** When it last became dead (Clock milliseconds); meaningful while `state` is dead. */
  deadSince: number
  /** When it entered its current state (Clock milliseconds). */
  stateSince: number
  /** The health monitor's last check of it, if any. */
  lastCheck: LastCheck | undefined
  /** Active connections as the server last reported them. */
  reported: number
  /** Clients located to it since that report: counted so a burst of Locates does not all land on one server. */
  pending: number
  responseTimeMs: number | null
  /** The server's own smoothed request latency, from its reports. */
  latencyMs: number | null
  located: number
  /** When a probe last answered (ms since the epoch), or `null`. */
  lastSeenAt: number | null
  /**
   * Slow start: the share of its weight the server takes now (1 once ramped up), and when it will
   * take all of it (Clock milliseconds). Changed by the ramp's coarse tick, never per pick.
   */
  ramp: number
  rampUntil: number
  /** Passive health: failures seen in traffic in a run, the last one's time, ejections so far. */
  failures: number
  failedAt: number
  ejectedTimes: number
  /** While ejected (Clock milliseconds; 0: not ejected), and why, in words. */
  ejectedUntil: number
  ejectedReason: string
}

export interface RegistryConfig {
  /** Weight of a new probe round trip in the moving average (0..1]. */
  readonly smoothing: number
  /** Servers known at once, at most: a new one past this is refused (`Busy`). */
  readonly maxServers: number
  /**
   * Slow start (HAProxy's `slowstart`): a server that becomes live takes `slowStartFloor` of its
   * weight at first, growing in step with the time since, to all of it after this many milliseconds.
   * 0 (the default) is off.
   */
  readonly slowStartMs?: number
  /**
   * Passive health (outlier detection): failures seen in traffic in a row — a client excluded the
   * server in its Locate, a proxied connect failed, a proxied connection was reset — that eject it
   * (0, the default here: off), for `ejectTimeMs` times the ejections it has had (at most 10 times),
   * never more than `maxEjectedPercent` of the servers at once. A failure more than `ejectTimeMs`
   * after the previous one starts a new run. Each `ejectTimeMs` a server stays live without a failure
   * takes one ejection off its count (Envoy's multiplier decay), so an old ejection is forgiven.
   */
  readonly ejectAfter?: number
  readonly ejectTimeMs?: number
  readonly maxEjectedPercent?: number
}

/** A failure seen in traffic: a client excluded the server, a proxied connect failed, or was reset. */
export type TrafficFailure = "excluded" | "connect" | "reset"

const failureWords: Record<TrafficFailure, string> = {
  excluded: "excluded by clients",
  connect: "proxied connects failed",
  reset: "proxied connections reset"
}

/** The longest ejection, in base ejection times. */
export const maxEjectionFactor = 10

/** The share of its weight a server just become live takes, with slow start on (Envoy's default 10%). */
export const slowStartFloor = 0.1

/** The share of its weight a server live for `elapsedMs` of a `slowStartMs` ramp takes. */
export const rampAt = (elapsedMs: number, slowStartMs: number): number =>
  Math.min(1, Math.max(slowStartFloor, elapsedMs / slowStartMs))

/** How often the ramp is recomputed: about twenty steps, at most one a second, at least 50 ms apart. */
export const rampTickMs = (slowStartMs: number): number => Math.min(1000, Math.max(50, slowStartMs / 20))

export const defaultConfig: RegistryConfig = { smoothing: 0.3, maxServers: 10_000 }

/** The settings a reload changes in place: slow start and passive health. */
export type Tunables = Required<
  Pick<RegistryConfig, "slowStartMs" | "ejectAfter" | "ejectTimeMs" | "maxEjectedPercent">
>

export const view = (entry: Entry): ServerView => {
  const counts = Metrics.unsafeCountsOf(entry.spec.id)
  return {
    ...entry.spec,
    state: entry.state,
    active: entry.state === "dead" ? 0 : entry.reported,
    responseTimeMs: entry.responseTimeMs === null ? null : Math.round(entry.responseTimeMs * 1000) / 1000,
    latencyMs: entry.latencyMs === null ? null : Math.round(entry.latencyMs * 1000) / 1000,
    located: entry.located,
    lastSeenAt: entry.lastSeenAt,
    stateSince: entry.stateSince,
    ...(entry.lastCheck === undefined ? {} : { lastCheck: entry.lastCheck }),
    failedChecks: counts?.failedChecks ?? 0,
    failedConnects: counts?.failedConnects ?? 0,
    reroutes: counts?.reroutes ?? 0,
    ejections: counts?.ejections ?? 0,
    ...(entry.ramp < 1 && entry.state === "live" ? ramping(entry) : {}),
    ...(entry.ejectedUntil > 0 ? { ejectedUntil: entry.ejectedUntil, ejectedReason: entry.ejectedReason } : {})
  }
}

/** What a view says of a server in slow start: the weight it takes now, and when it will take all of it. */
const ramping = (entry: Entry) => ({
  effectiveWeight: Math.round(entry.spec.weight * entry.ramp * 100) / 100,
  slowStartUntil: entry.rampUntil
})

const candidate = (entry: Entry): Candidate | undefined =>
  entry.state === "live"
    ? {
        id: entry.spec.id,
        weight: entry.ramp < 1 ? entry.spec.weight * entry.ramp : entry.spec.weight,
        active: entry.reported + entry.pending,
        responseTimeMs: entry.responseTimeMs,
        latencyMs: entry.latencyMs
      }
    : undefined

/** The registry's books: every update below is one synchronous step over them. */
interface Books {
  readonly maxServers: number
  /** The registry's clock (the TestClock in tests): when a server went dead. */
  readonly clock: Clock.Clock
  readonly entries: Map<ServerId, Entry>
  readonly byEndpoint: Map<string, ServerId>
  readonly observers: Set<Observer>
  readonly watchers: Set<Watcher>
  readonly hub: PubSub.PubSub<RegistryChange>
  /** The generation the last registration got. */
  generation: number
  /** Slow start's length (0: off), and the servers ramping up now. */
  slowStartMs: number
  readonly ramping: Set<Entry>
  ejectAfter: number
  ejectTimeMs: number
  maxEjectedPercent: number
  /** The servers ejected now. */
  readonly ejected: Set<Entry>
}

/**
 * A failure seen in traffic: counted in the server's run; the run's `ejectAfter`-th ejects it, unless
 * that would eject more than `maxEjectedPercent` of the servers.
 */
export const trafficFailed = (books: Books, entry: Entry, failure: TrafficFailure) => {
  const now = books.clock.unsafeCurrentTimeMillis()
  forgive(books, entry, now)
  entry.failures = now - entry.failedAt > books.ejectTimeMs ? 1 : entry.failures + 1
  entry.failedAt = now
  if (entry.state !== "live" || entry.failures < books.ejectAfter) return
  if ((books.ejected.size + 1) * 100 > books.entries.size * books.maxEjectedPercent) return
  entry.ejectedTimes += 1
  entry.ejectedUntil = now + books.ejectTimeMs * Math.min(entry.ejectedTimes, maxEjectionFactor)
  entry.ejectedReason = `${entry.failures} failures in a row: ${failureWords[failure]}`
  entry.failures = 0
  books.ejected.add(entry)
  Metrics.unsafeOutlierEjected(entry.spec.id, failure)
  toState(books, "dead", now)(entry)
  tell(books, entry)
  books.hub.unsafeOffer({ _tag: "Updated", server: view(entry) })
}

/**
 * Penalty decay, worked out when it matters (at the next failure, not on a timer): each whole
 * ejection time the server has been live since it became live and since its last failure takes one
 * off its ejections so far.
 */
const forgive = (books: Books, entry: Entry, now: number) => {
  if (entry.ejectedTimes === 0 || entry.state !== "live") return
  const clean = now - Math.max(entry.stateSince, entry.failedAt)
  entry.ejectedTimes = Math.max(0, entry.ejectedTimes - Math.floor(clean / books.ejectTimeMs))
}

/** The entry has just become live: with slow start on, it takes a small share of its weight at first. */
const becameLive = (books: Books, entry: Entry, now: number) => {
  if (books.slowStartMs <= 0) return
  entry.ramp = slowStartFloor
  entry.rampUntil = now + books.slowStartMs
  books.ramping.add(entry)
}

/**
 * The ramp's tick: each server in slow start takes the share of its weight its time live gives it,
 * told to the strategy through the same path as every other change; one that takes all of it, or is no
 * longer live, leaves the ramp.
 */
const rampStep = (books: Books) => {
  const now = books.clock.unsafeCurrentTimeMillis()
  for (const entry of books.ramping) {
    if (entry.state !== "live") {
      entry.ramp = 1
      books.ramping.delete(entry)
      continue
    }
    const ramp = rampAt(books.slowStartMs - (entry.rampUntil - now), books.slowStartMs)
    if (ramp >= 1) books.ramping.delete(entry)
    if (ramp === entry.ramp) continue
    entry.ramp = ramp
    tell(books, entry)
    books.hub.unsafeOffer({ _tag: "Updated", server: view(entry) })
  }
}

/** The entry `server` names: by id, the one in force; by registration, that one only while it is in force. */
export const lookup = (books: Books, server: ServerRef): Entry | undefined => {
  if (typeof server === "string") return books.entries.get(server)
  const entry = books.entries.get(server.id)
  return entry?.generation === server.generation ? entry : undefined
}

export const liveCandidates = (books: Books) => [...books.entries.values()].flatMap((entry) => candidate(entry) ?? [])

/** Tells the observers (the strategy's index) what the entry is now. */
export const tell = (books: Books, entry: Entry) => {
  const eligible = candidate(entry)
  for (const observer of books.observers) observer(entry.spec.id, eligible)
}

export const removeEntry = (books: Books, entry: Entry) => {
  books.entries.delete(entry.spec.id)
  books.ejected.delete(entry)
  books.ramping.delete(entry)
  books.byEndpoint.delete(formatEndpoint(entry.spec))
  entry.state = "dead"
  Metrics.unsafeForget(entry.spec.id)
  tell(books, entry)
  for (const watcher of books.watchers) watcher.removed(entry.spec.id)
  books.hub.unsafeOffer({ _tag: "Removed", server: view(entry) })
}

/**
 * The same server (id and address) registering again: a new registration of it — the newest
 * registrant owns it — whose weight may change; its health verdict and figures stand.
 */
const refreshEntry = (books: Books, entry: Entry, spec: ServerSpec): Entry => {
  entry.spec = spec
  entry.generation = ++books.generation
  // Registering again (or a reload listing it again) ends a drain: back in rotation at once if its
  // last probe answered (probes go on while it drains) or nobody probes; else dead until one does.
  if (entry.state === "draining") {
    const now = books.clock.unsafeCurrentTimeMillis()
    entry.state = books.watchers.size === 0 || entry.lastCheck?.ok === true ? "live" : "dead"
    if (entry.state === "dead") entry.deadSince = now
    entry.stateSince = now
    if (entry.state === "live") becameLive(books, entry, now)
  }
  tell(books, entry)
  books.hub.unsafeOffer({ _tag: "Updated", server: view(entry) })
  return entry
}

/** A server with the same id or at the same address is replaced; one with the same id keeps its history. */
const addEntry = (books: Books, spec: ServerSpec, origin: Origin): Entry | Busy => {
  const endpoint = formatEndpoint(spec)
  const previous = books.entries.get(spec.id)
  if (previous !== undefined && formatEndpoint(previous.spec) === endpoint) return refreshEntry(books, previous, spec)
  const sameAddress = books.byEndpoint.get(endpoint)
  const other = sameAddress === undefined || sameAddress === spec.id ? undefined : books.entries.get(sameAddress)
  const replaced = (previous === undefined ? 0 : 1) + (other === undefined ? 0 : 1)
  if (replaced === 0 && books.entries.size >= books.maxServers) {
    return new Busy({
      message: `the balancer is full (--max-servers ${books.maxServers}): no more servers can join`
    })
  }
  // Admitted before `previous` goes: the same id at a new address keeps counting its figures.
  Metrics.unsafeAdmit(spec.id)
  if (previous !== undefined) removeEntry(books, previous)
  if (other !== undefined) removeEntry(books, other)
  const entry: Entry = {
    spec,
    generation: ++books.generation,
    state: books.watchers.size > 0 ? "dead" : "live",
    origin,
    deadSince: books.clock.unsafeCurrentTimeMillis(),
    stateSince: books.clock.unsafeCurrentTimeMillis(),
    lastCheck: undefined,
    reported: previous?.reported ?? 0,
    pending: 0,
    responseTimeMs: previous?.responseTimeMs ?? null,
    latencyMs: previous?.latencyMs ?? null,
    located: previous?.located ?? 0,
    lastSeenAt: null,
    ramp: 1,
    rampUntil: 0,
    failures: 0,
    failedAt: 0,
    ejectedTimes: previous?.ejectedTimes ?? 0,
    ejectedUntil: 0,
    ejectedReason: ""
  }
  if (entry.state === "live") becameLive(books, entry, entry.stateSince)
  books.entries.set(spec.id, entry)
  books.byEndpoint.set(endpoint, spec.id)
  tell(books, entry)
  const server = view(entry)
  for (const watcher of books.watchers) watcher.added(server)
  books.hub.unsafeOffer({ _tag: "Added", server })
  return entry
}

/** Applies `change` to a known server; one that returns `false` changed nothing and is not announced. */
export const update = (books: Books, ref: ServerRef, change: (entry: Entry) => boolean | void) =>
  Effect.sync(() => {
    const entry = lookup(books, ref)
    if (entry === undefined) return Option.none<ServerView>()
    if (change(entry) === false) return Option.some(view(entry))
    tell(books, entry)
    const server = view(entry)
    books.hub.unsafeOffer({ _tag: "Updated", server })
    return Option.some(server)
  })

// ---- the changes, each a function of an entry --------------------------------------------------

const toState =
  (books: Books, state: ServerState, now: number) =>
  (entry: Entry): boolean | void => {
    if (entry.state === state) return false
    // An ejected server returns once its time is out (and, while watched, a probe answers).
    if (state === "live" && entry.ejectedUntil > now) return false
    if (state === "live" || state === "draining") {
      entry.ejectedUntil = 0
      books.ejected.delete(entry)
    }
    if (entry.state === "live" && state === "dead") Metrics.unsafeEjected(entry.spec.id)
    if (state === "dead") entry.deadSince = now
    entry.stateSince = now
    entry.state = state
    if (state !== "live") entry.pending = 0
    else becameLive(books, entry, now)
  }

export const toWeight =
  (weight: Weight) =>
  (entry: Entry): boolean | void => {
    if (entry.spec.weight === weight) return false
    entry.spec = { ...entry.spec, weight }
  }

export const loadReport =
  (active: number, latencyMs: number | undefined) =>
  (entry: Entry): boolean | void => {
    const latency = latencyMs ?? entry.latencyMs
    if (entry.reported === active && entry.pending === 0 && entry.latencyMs === latency) return false
    entry.reported = active
    entry.pending = 0
    entry.latencyMs = latency
  }

export const probeAnswer =
  (smoothing: number, roundTripMs: number, active: number | undefined, latencyMs: number | undefined, at?: number) =>
  (entry: Entry): void => {
    entry.responseTimeMs =
      entry.responseTimeMs === null
        ? roundTripMs
        : entry.responseTimeMs + smoothing * (roundTripMs - entry.responseTimeMs)
    // A bare TCP probe says nothing of load: the count kept by whoever knows it stands.
    if (active !== undefined) {
      entry.reported = active
      entry.pending = 0
    }
    entry.latencyMs = latencyMs ?? entry.latencyMs
    entry.lastSeenAt = at ?? entry.lastSeenAt
  }

/** A health monitor takes over: a server no probe has answered yet is not live on anyone's word. */
export const startWatching = (books: Books, watcher: Watcher) => {
  books.watchers.add(watcher)
  for (const entry of books.entries.values()) {
    if (entry.state === "live" && entry.lastSeenAt === null) {
      entry.state = "dead"
      entry.deadSince = books.clock.unsafeCurrentTimeMillis()
      entry.stateSince = entry.deadSince
      entry.pending = 0
      tell(books, entry)
      books.hub.unsafeOffer({ _tag: "Updated", server: view(entry) })
    }
  }
  return [...books.entries.values()].map(view)
}

/** `addEntry` as an effect: the entry added, or `Busy` past the limit. */
export const added = (books: Books, spec: ServerSpec, origin: Origin): Effect.Effect<Entry, Busy> =>
  Effect.suspend(() => {
    const entry = addEntry(books, spec, origin)
    return entry instanceof Busy ? Effect.fail(entry) : Effect.succeed(entry)
  })

/** Keeps the health monitor's last check of a server; announced with its next change, not on its own. */
export const recordCheck = (books: Books, id: ServerId, check: LastCheck) => {
  const entry = books.entries.get(id)
  if (entry !== undefined) entry.lastCheck = check
}

/** A change of state, at the time the effect runs (not when it is made). */
export const setState = (books: Books, server: ServerRef, state: ServerState) =>
  Effect.suspend(() => update(books, server, toState(books, state, books.clock.unsafeCurrentTimeMillis())))

/** Removes the self-registered servers dead since `cutoff` or longer; returns their ids. */
export const removeDeadSince = (books: Books, cutoff: number): ReadonlyArray<ServerId> => {
  const removed: Array<ServerId> = []
  for (const entry of books.entries.values()) {
    if (entry.origin === "registered" && entry.state === "dead" && entry.deadSince <= cutoff) {
      removeEntry(books, entry)
      removed.push(entry.spec.id)
    }
  }
  return removed
}

/** The ramp's fiber, in `scope` (the registry's); with slow start off, no fiber. */
const ramp = (books: Books, scope: Scope.Scope) =>
  books.slowStartMs > 0
    ? Effect.map(
        Effect.forkIn(
          Effect.repeat(
            Effect.sync(() => rampStep(books)),
            Schedule.spaced(Duration.millis(rampTickMs(books.slowStartMs)))
          ),
          scope
        ),
        (fiber): Fiber.RuntimeFiber<unknown> | undefined => fiber
      )
    : Effect.succeed(undefined)

/** New settings in place; each ramp under way keeps its start and takes the new length (ends, if off). */
const retune = (books: Books, tunables: Tunables) => {
  const before = books.slowStartMs
  books.ejectAfter = tunables.ejectAfter
  books.ejectTimeMs = tunables.ejectTimeMs
  books.maxEjectedPercent = tunables.maxEjectedPercent
  books.slowStartMs = tunables.slowStartMs
  for (const entry of books.ramping) {
    entry.rampUntil += books.slowStartMs - before
    if (books.slowStartMs > 0) continue
    entry.ramp = 1
    books.ramping.delete(entry)
    tell(books, entry)
    books.hub.unsafeOffer({ _tag: "Updated", server: view(entry) })
  }
  if (books.slowStartMs > 0) rampStep(books)
  return before !== books.slowStartMs
}

/** Starts the ramp (with slow start on), and returns how a reload retunes the books and swaps the ramp's fiber. */
export const reconfigurable = (books: Books) =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    let ramper = yield* ramp(books, scope)
    // One reconfigure at a time, so the ramp's fiber is swapped whole.
    const oneAtATime = yield* Effect.makeSemaphore(1)
    return (tunables: Tunables) =>
      oneAtATime.withPermits(1)(
        Effect.gen(function* () {
          if (!retune(books, tunables)) return
          if (ramper !== undefined) yield* Fiber.interrupt(ramper)
          ramper = yield* ramp(books, scope)
        })
      )
  })

/** Where a client goes for a server, and whether it speaks TLS there. */
export const locationOf = (spec: ServerSpec): ServerLocation =>
  spec.tls === true
    ? { id: spec.id, host: spec.host, port: spec.port, tls: true }
    : { id: spec.id, host: spec.host, port: spec.port }

/** Empty books, on the clock of the environment. */
export const newBooks = (config: RegistryConfig) =>
  Effect.gen(function* () {
    const books: Books = {
      maxServers: config.maxServers,
      clock: yield* Effect.clock,
      entries: new Map(),
      byEndpoint: new Map(),
      observers: new Set(),
      watchers: new Set(),
      hub: yield* PubSub.sliding<RegistryChange>(4096),
      generation: 0,
      slowStartMs: config.slowStartMs ?? 0,
      ramping: new Set(),
      ejectAfter: config.ejectAfter ?? 0,
      ejectTimeMs: config.ejectTimeMs ?? 30_000,
      maxEjectedPercent: config.maxEjectedPercent ?? 50,
      ejected: new Set()
    }
    return books
  })
