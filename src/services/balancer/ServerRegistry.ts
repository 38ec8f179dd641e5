/**
 * The servers a balancer knows and their live state: address, weight, live/dead/draining, active
 * connections, smoothed response time, and how often each was located.
 *
 * Every update is one synchronous step (`Effect.sync`): JavaScript runs one fiber at a time and a
 * fiber only yields between effects, so no update can interleave with another and none is lost,
 * however many fibers pick, report and probe at once — without a lock on the Locate path.
 * Changes are published on a stream (for status views) and handed synchronously to observers (the
 * balancer's strategy index, which must never see a stale server).
 */
import { Context, Effect, Layer, Option, PubSub, type Queue, type Scope, Stream } from "effect"
import {
  type Endpoint,
  formatEndpoint,
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

/** Called inside the registry's update, before it returns: must be quick and must not throw. */
export type Observer = (id: ServerId, candidate: Candidate | undefined) => void

interface Entry {
  spec: ServerSpec
  state: ServerState
  /** Active connections as the server last reported them. */
  reported: number
  /** Clients located to it since that report: counted so a burst of Locates does not all land on one server. */
  pending: number
  responseTimeMs: number | null
  /** The server's own smoothed request latency, from its reports. */
  latencyMs: number | null
  located: number
}

export interface RegistryConfig {
  /** Weight of a new probe round trip in the moving average (0..1]. */
  readonly smoothing: number
}

export const defaultConfig: RegistryConfig = { smoothing: 0.3 }

export class ServerRegistry extends Context.Tag("effect-lb/ServerRegistry")<
  ServerRegistry,
  {
    /** Adds a server, live; one with the same id or the same address is replaced. */
    readonly add: (spec: ServerSpec) => Effect.Effect<ServerView>
    readonly remove: (id: ServerId) => Effect.Effect<boolean>
    readonly setState: (id: ServerId, state: ServerState) => Effect.Effect<Option.Option<ServerView>>
    /** Changes a server's weight in place: its state, load and history stay. */
    readonly setWeight: (id: ServerId, weight: Weight) => Effect.Effect<Option.Option<ServerView>>
    /** The server says it has `active` connections (and, if it says, how long its requests take). */
    readonly reportLoad: (id: ServerId, active: number, latencyMs?: number) => Effect.Effect<void>
    /** A probe answered after `roundTripMs`, reporting `active` connections (and maybe its latency). */
    readonly recordProbe: (
      id: ServerId,
      roundTripMs: number,
      active: number | undefined,
      latencyMs?: number
    ) => Effect.Effect<void>
    readonly get: (id: ServerId) => Effect.Effect<Option.Option<ServerView>>
    readonly list: Effect.Effect<ReadonlyArray<ServerView>>
    /** Every change, from the moment the stream starts. */
    readonly changes: Stream.Stream<RegistryChange>
    /** Every change from now on, for as long as the scope lasts (subscribed before it returns). */
    readonly subscribe: Effect.Effect<Queue.Dequeue<RegistryChange>, never, Scope.Scope>
    /** Registers an observer for the scope's lifetime and returns the live servers at that instant. */
    readonly observe: (observer: Observer) => Effect.Effect<ReadonlyArray<Candidate>, never, Scope.Scope>
    /** The live servers now. Synchronous: for callers that must read and act in one step. */
    readonly unsafeLive: () => ReadonlyArray<Candidate>
    /** The id of the server at an address, if known. Synchronous. */
    readonly unsafeIdAt: (endpoint: Endpoint) => ServerId | undefined
    /** Counts a client located to `id` and returns where to send it. Synchronous: the Locate path. */
    readonly unsafeLocated: (id: ServerId) => ServerLocation | undefined
    /** Sets the exact active count (the proxy knows it). Synchronous: the proxy's connection path. */
    readonly unsafeSetActive: (id: ServerId, active: number) => void
  }
>() {}

const view = (entry: Entry): ServerView => ({
  ...entry.spec,
  state: entry.state,
  active: entry.reported,
  responseTimeMs: entry.responseTimeMs === null ? null : Math.round(entry.responseTimeMs * 1000) / 1000,
  latencyMs: entry.latencyMs === null ? null : Math.round(entry.latencyMs * 1000) / 1000,
  located: entry.located
})

const candidate = (entry: Entry): Candidate | undefined =>
  entry.state === "live"
    ? {
        id: entry.spec.id,
        weight: entry.spec.weight,
        active: entry.reported + entry.pending,
        responseTimeMs: entry.responseTimeMs,
        latencyMs: entry.latencyMs
      }
    : undefined

export const make = (config: RegistryConfig = defaultConfig) =>
  Effect.gen(function* () {
    const entries = new Map<ServerId, Entry>()
    const byEndpoint = new Map<string, ServerId>()
    const observers = new Set<Observer>()
    const hub = yield* PubSub.sliding<RegistryChange>(4096)

    const tell = (entry: Entry) => {
      const eligible = candidate(entry)
      for (const observer of observers) observer(entry.spec.id, eligible)
    }
    const publish = (change: RegistryChange) => hub.unsafeOffer(change)

    const removeEntry = (entry: Entry) => {
      entries.delete(entry.spec.id)
      byEndpoint.delete(formatEndpoint(entry.spec))
      entry.state = "dead"
      tell(entry)
      publish({ _tag: "Removed", server: view(entry) })
    }

    const update = (id: ServerId, change: (entry: Entry) => boolean | void) =>
      Effect.sync(() => {
        const entry = entries.get(id)
        if (entry === undefined) return Option.none<ServerView>()
        if (change(entry) === false) return Option.some(view(entry))
        tell(entry)
        const server = view(entry)
        publish({ _tag: "Updated", server })
        return Option.some(server)
      })

    return ServerRegistry.of({
      add: (spec) =>
        Effect.sync(() => {
          const endpoint = formatEndpoint(spec)
          const previous = entries.get(spec.id)
          const sameAddress = byEndpoint.get(endpoint)
          if (previous !== undefined) removeEntry(previous)
          const other = sameAddress === undefined ? undefined : entries.get(sameAddress)
          if (other !== undefined) removeEntry(other)
          const entry: Entry = {
            spec,
            state: "live",
            reported: previous?.reported ?? 0,
            pending: 0,
            responseTimeMs: previous?.responseTimeMs ?? null,
            latencyMs: previous?.latencyMs ?? null,
            located: previous?.located ?? 0
          }
          entries.set(spec.id, entry)
          byEndpoint.set(endpoint, spec.id)
          tell(entry)
          const server = view(entry)
          publish({ _tag: "Added", server })
          return server
        }),
      remove: (id) =>
        Effect.sync(() => {
          const entry = entries.get(id)
          if (entry === undefined) return false
          removeEntry(entry)
          return true
        }),
      setState: (id, state) =>
        update(id, (entry) => {
          if (entry.state === state) return false
          if (entry.state === "live" && state === "dead") Metrics.unsafeEjected(id)
          entry.state = state
          if (state !== "live") entry.pending = 0
        }),
      setWeight: (id, weight) =>
        update(id, (entry) => {
          if (entry.spec.weight === weight) return false
          entry.spec = { ...entry.spec, weight }
        }),
      reportLoad: (id, active, latencyMs) =>
        Effect.asVoid(
          update(id, (entry) => {
            const latency = latencyMs ?? entry.latencyMs
            if (entry.reported === active && entry.pending === 0 && entry.latencyMs === latency) return false
            entry.reported = active
            entry.pending = 0
            entry.latencyMs = latency
          })
        ),
      recordProbe: (id, roundTripMs, active, latencyMs) =>
        Effect.asVoid(
          update(id, (entry) => {
            entry.responseTimeMs =
              entry.responseTimeMs === null
                ? roundTripMs
                : entry.responseTimeMs + config.smoothing * (roundTripMs - entry.responseTimeMs)
            // A bare TCP probe says nothing of load: the count kept by whoever knows it stands.
            if (active !== undefined) {
              entry.reported = active
              entry.pending = 0
            }
            entry.latencyMs = latencyMs ?? entry.latencyMs
            if (entry.state === "dead") entry.state = "live"
          })
        ),
      get: (id) =>
        Effect.sync(() => {
          const entry = entries.get(id)
          return entry === undefined ? Option.none() : Option.some(view(entry))
        }),
      list: Effect.sync(() => [...entries.values()].map(view)),
      changes: Stream.fromPubSub(hub),
      subscribe: PubSub.subscribe(hub),
      observe: (observer) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            observers.add(observer)
            return [...entries.values()].flatMap((entry) => candidate(entry) ?? [])
          }),
          () => Effect.sync(() => observers.delete(observer))
        ),
      unsafeLive: () => [...entries.values()].flatMap((entry) => candidate(entry) ?? []),
      unsafeIdAt: (endpoint) => byEndpoint.get(formatEndpoint(endpoint)),
      unsafeSetActive: (id, active) => {
        const entry = entries.get(id)
        if (entry === undefined) return
        entry.reported = active
        entry.pending = 0
        tell(entry)
      },
      unsafeLocated: (id) => {
        const entry = entries.get(id)
        if (entry === undefined) return undefined
        entry.located += 1
        entry.pending += 1
        tell(entry)
        return { id: entry.spec.id, host: entry.spec.host, port: entry.spec.port }
      }
    })
  })

export const layer = (config: RegistryConfig = defaultConfig): Layer.Layer<ServerRegistry> =>
  Layer.effect(ServerRegistry, make(config))
