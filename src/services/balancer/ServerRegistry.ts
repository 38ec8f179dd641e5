/**
 * The servers a balancer knows and their live state: address, weight, live/dead/draining, active
 * connections, smoothed response time, and how often each was located.
 *
 * Every update is one synchronous step (`Effect.sync`): JavaScript runs one fiber at a time and a
 * fiber only yields between effects, so no update can interleave with another and none is lost,
 * however many fibers pick, report and probe at once — without a lock on the Locate path.
 * Changes are published on a stream (for status views) and handed synchronously to observers (the
 * balancer's strategy index, which must never see a stale server).
 *
 * Each addition is a new registration with a generation of its own. Whoever made one (a server's
 * control connection, a drain under way) acts through it, so once a newer registration for the
 * same id or address has superseded it, its late reports and removals change nothing.
 * While a health monitor watches the registry, only it makes a server `live`: a new server starts
 * `dead` until a probe answers, and registering a known server again keeps its verdict.
 */
import { Context, Effect, Layer, Option, PubSub, type Queue, type Scope, Stream } from "effect"
import { Busy } from "../../domain/Errors.js"
import {
  type Endpoint,
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

import {
  type RegistryChange,
  type Registration,
  type ServerRef,
  type Observer,
  type Watcher,
  type Origin,
  type RegistryConfig,
  type TrafficFailure,
  defaultConfig,
  type Tunables,
  view,
  trafficFailed,
  lookup,
  liveCandidates,
  tell,
  removeEntry,
  update,
  toWeight,
  loadReport,
  probeAnswer,
  startWatching,
  added,
  recordCheck,
  setState,
  removeDeadSince,
  reconfigurable,
  locationOf,
  newBooks
} from "./RegistryBooks.js"

export type {
  RegistryChange,
  Registration,
  ServerRef,
  Observer,
  Watcher,
  Origin,
  RegistryConfig,
  TrafficFailure,
  Tunables
} from "./RegistryBooks.js"
export { maxEjectionFactor, slowStartFloor, rampAt, rampTickMs, defaultConfig } from "./RegistryBooks.js"

export class ServerRegistry extends Context.Tag("effect-lb/ServerRegistry")<
  ServerRegistry,
  {
    /**
     * Adds a server: one with the same id or the same address is replaced, except that the same id at
     * the same address is the same server, updated in place (its weight), keeping its state. A new
     * server is `live` at once, or, while a health monitor watches, `dead` until a probe answers. A
     * server that would make more than `maxServers` is refused with `Busy` (a replacement always fits).
     * `origin` says whether it may be removed once dead for long (`registered`) or stays (`configured`).
     */
    readonly add: (spec: ServerSpec, origin?: Origin) => Effect.Effect<ServerView, Busy>
    /** Adds a server as `add` does, and returns the new registration (for its owner to act through). */
    readonly register: (
      spec: ServerSpec
    ) => Effect.Effect<{ readonly server: ServerView; readonly registration: Registration }, Busy>
    /** The registration in force for `id` now, if any. Synchronous. */
    readonly unsafeRegistration: (id: ServerId) => Registration | undefined
    /**
     * Removes every `registered` server that has been dead since `cutoff` (Clock milliseconds) or
     * longer; `configured` ones stay. Returns the ids removed.
     */
    readonly removeDeadSince: (cutoff: number) => Effect.Effect<ReadonlyArray<ServerId>>
    readonly remove: (server: ServerRef) => Effect.Effect<boolean>
    readonly setState: (server: ServerRef, state: ServerState) => Effect.Effect<Option.Option<ServerView>>
    /** Changes a server's weight in place: its state, load and history stay. */
    readonly setWeight: (id: ServerId, weight: Weight) => Effect.Effect<Option.Option<ServerView>>
    /** The server says it has `active` connections (and, if it says, how long its requests take). */
    readonly reportLoad: (server: ServerRef, active: number, latencyMs?: number) => Effect.Effect<void>
    /**
     * A probe answered after `roundTripMs` at `at` (ms since the epoch), reporting `active` connections
     * (and maybe its latency). It does not change the state: the health monitor decides that.
     */
    readonly recordProbe: (
      id: ServerId,
      roundTripMs: number,
      active: number | undefined,
      latencyMs?: number,
      at?: number
    ) => Effect.Effect<void>
    /** The health monitor's last check of `id`, shown with the server; no change is announced for it. */
    readonly recordCheck: (id: ServerId, check: LastCheck) => Effect.Effect<void>
    readonly get: (server: ServerRef) => Effect.Effect<Option.Option<ServerView>>
    readonly list: Effect.Effect<ReadonlyArray<ServerView>>
    /** Every change, from the moment the stream starts. */
    readonly changes: Stream.Stream<RegistryChange>
    /** Every change from now on, for as long as the scope lasts (subscribed before it returns). */
    readonly subscribe: Effect.Effect<Queue.Dequeue<RegistryChange>, never, Scope.Scope>
    /**
     * A health monitor takes over for the scope's lifetime: it is told of every server added or removed,
     * and servers must answer a probe to be `live` (those that never have are made `dead` now).
     * Returns the servers at that instant.
     */
    readonly watch: (watcher: Watcher) => Effect.Effect<ReadonlyArray<ServerView>, never, Scope.Scope>
    /** Registers an observer for the scope's lifetime and returns the live servers at that instant. */
    readonly observe: (observer: Observer) => Effect.Effect<ReadonlyArray<Candidate>, never, Scope.Scope>
    /** The live servers now. Synchronous: for callers that must read and act in one step. */
    readonly unsafeLive: () => ReadonlyArray<Candidate>
    /** How the server known as `id` came to be known, if it is. Synchronous. */
    readonly unsafeOrigin: (id: ServerId) => Origin | undefined
    /** The id of the server at an address, if known. Synchronous. */
    readonly unsafeIdAt: (endpoint: Endpoint) => ServerId | undefined
    /** Counts a client located to `id` and returns where to send it. Synchronous: the Locate path. */
    readonly unsafeLocated: (id: ServerId) => ServerLocation | undefined
    /** Sets the exact active count (the proxy knows it). Synchronous: the proxy's connection path. */
    readonly unsafeSetActive: (id: ServerId, active: number) => void
    /** Passive health: a failure seen in traffic (a counter bump; may eject it). Synchronous. */
    readonly unsafeFailed: (id: ServerId, failure: TrafficFailure) => void
    /** Passive health: a proxied connection to it ended well; its run of failures ends. Synchronous. */
    readonly unsafeSucceeded: (id: ServerId) => void
    /**
     * Applies new slow-start and passive-health settings in place (a reload): every server's state,
     * load and history stay; a ramp under way is stretched or shortened to the new length (ended,
     * with slow start off); an ejection under way runs its course.
     */
    readonly reconfigure: (tunables: Tunables) => Effect.Effect<void>
  }
>() {}

export const make = (config: RegistryConfig = defaultConfig) =>
  Effect.gen(function* () {
    const books = yield* newBooks(config)
    const { entries, byEndpoint, observers, hub } = books
    // The per-server metric series are process-wide: a registry that ends lets go of its servers'.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const id of entries.keys()) Metrics.unsafeForget(id)
      })
    )
    return ServerRegistry.of({
      reconfigure: yield* reconfigurable(books),
      add: (spec, origin = "registered") => Effect.map(added(books, spec, origin), view),
      removeDeadSince: (cutoff) => Effect.sync(() => removeDeadSince(books, cutoff)),
      register: (spec) =>
        Effect.map(added(books, spec, "registered"), (entry) => ({
          server: view(entry),
          registration: { id: entry.spec.id, generation: entry.generation }
        })),
      unsafeRegistration: (id) => {
        const entry = entries.get(id)
        return entry === undefined ? undefined : { id, generation: entry.generation }
      },
      remove: (server) =>
        Effect.sync(() => {
          const entry = lookup(books, server)
          if (entry !== undefined) removeEntry(books, entry)
          return entry !== undefined
        }),
      setState: (server, state) => setState(books, server, state),
      setWeight: (id, weight) => update(books, id, toWeight(weight)),
      reportLoad: (server, active, latencyMs) => Effect.asVoid(update(books, server, loadReport(active, latencyMs))),
      recordProbe: (id, roundTripMs, active, latencyMs, at) =>
        Effect.asVoid(update(books, id, probeAnswer(config.smoothing, roundTripMs, active, latencyMs, at))),
      recordCheck: (id, check) => Effect.sync(() => recordCheck(books, id, check)),
      get: (server) => Effect.sync(() => Option.map(Option.fromNullable(lookup(books, server)), view)),
      list: Effect.sync(() => [...entries.values()].map(view)),
      changes: Stream.fromPubSub(hub),
      subscribe: PubSub.subscribe(hub),
      watch: (watcher) =>
        Effect.acquireRelease(
          Effect.sync(() => startWatching(books, watcher)),
          () => Effect.sync(() => books.watchers.delete(watcher))
        ),
      observe: (observer) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            observers.add(observer)
            return liveCandidates(books)
          }),
          () => Effect.sync(() => observers.delete(observer))
        ),
      unsafeLive: () => liveCandidates(books),
      unsafeOrigin: (id) => entries.get(id)?.origin,
      unsafeIdAt: (endpoint) => byEndpoint.get(formatEndpoint(endpoint)),
      unsafeSetActive: (id, active) => {
        const entry = entries.get(id)
        if (entry === undefined) return
        entry.reported = active
        entry.pending = 0
        tell(books, entry)
      },
      unsafeFailed: (id, failure) => {
        if (books.ejectAfter === 0) return
        const entry = entries.get(id)
        if (entry !== undefined) trafficFailed(books, entry, failure)
      },
      unsafeSucceeded: (id) => {
        const entry = books.ejectAfter === 0 ? undefined : entries.get(id)
        if (entry !== undefined) entry.failures = 0
      },
      unsafeLocated: (id) => {
        const entry = entries.get(id)
        if (entry === undefined) return undefined
        entry.located += 1
        entry.pending += 1
        tell(books, entry)
        return locationOf(entry.spec)
      }
    })
  })

export const layer = (config: RegistryConfig = defaultConfig): Layer.Layer<ServerRegistry> =>
  Layer.scoped(ServerRegistry, make(config))
