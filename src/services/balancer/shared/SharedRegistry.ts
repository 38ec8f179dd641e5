/**
 * The shared registry: several balancers keep one membership, the servers' weights and drains, and
 * the strategy, in a store (Redis) — while each keeps its own live/dead verdicts, round trips and
 * counts. It wraps the in-memory `ServerRegistry` and `Balancer` behind the same interfaces, so the
 * Locate path and the proxy read local memory exactly as without it, and never wait on the network.
 *
 * Local changes (an operator's, a server's registration, a reload's) are applied locally at once, as
 * before, and queued to be written to the store, one at a time and in order, by one writer fiber.
 * Remote changes arrive through the store's callbacks, are queued, and are applied by one fiber in
 * batches — everything that arrived since the last batch, synchronously — straight to the inner
 * registry and balancer, so they are not published again. A change is applied only where the local
 * state differs from it, so applying one twice changes nothing.
 *
 * A revision missing, a (re)connect, or a message this version cannot read: a snapshot is read and
 * the difference applied. This balancer's own changes come back too, and are applied like the others
 * (changing nothing, usually) unless a later one of its own to the same server is on its way: so a
 * snapshot read before its write landed, or another balancer's older change, does not stand.
 *
 * The pieces: `SyncState.ts` holds what this balancer knows of the store, `Sync.ts` applies the
 * store's news here, `Writer.ts` writes the local changes there. This file wires them together: the
 * layer (`make`, `layer`), its config, its status (`RegistrySync`), and the registry as the rest of
 * the balancer sees it.
 */
import { Context, Duration, Effect, Layer, Option, Queue } from "effect"
import * as Crypto from "node:crypto"
import { RegistryUnavailable } from "../../../domain/Errors.js"
import type { ServerId, ServerView } from "../../../domain/Server.js"
import { Balancer } from "../Balancer.js"
import { ServerRegistry, type ServerRef } from "../ServerRegistry.js"
import * as LoadSharing from "./LoadSharing.js"
import * as Leases from "./Leases.js"
import { type Holder, type SharedChange, SharedStore } from "./Store.js"
import { applier, batch, type Inbound, reclaim, resync } from "./Sync.js"
import { describeChange, initialState, keyOf, noteHolder, noteOwn, recordOf, type SyncState } from "./SyncState.js"
import { type Outgoing, park, reporter, writer } from "./Writer.js"

export interface SharedConfig {
  /** This balancer's name in the cluster, stable across restarts: it signs its changes. */
  readonly balancerId: string
  /** Each write and each snapshot read must be done within this long. */
  readonly timeout: Duration.DurationInput
  /** Local changes waiting to be written, at most; past this, a change stays local (logged). */
  readonly maxPending: number
  /** Remote changes waiting to be applied, at most; past this, they are dropped and a snapshot read. */
  readonly maxInbox: number
  /** Servers whose load report waits to be published or applied, at most (the registry's server cap). */
  readonly maxServers?: number
  /** The servers' load reports received here are published at most once per this long (100 ms). */
  readonly loadInterval?: Duration.DurationInput
  /** A holder unannounced this long (seen so, continuously) loses its servers (`Leases.ts`). */
  readonly lease: Duration.DurationInput
  /** How often the announcements are read for the leases. */
  readonly leaseCheck: Duration.DurationInput
}

export const defaults: Omit<SharedConfig, "balancerId"> = {
  timeout: Duration.seconds(2),
  maxPending: 10_000,
  maxInbox: 10_000,
  lease: Leases.defaults.lease,
  leaseCheck: Leases.defaults.interval
}

/** What this balancer knows of the shared registry, for people (the admin API, `/metrics`). */
export interface SyncStatus {
  /** It answers and its state has been read since it last (re)connected. */
  readonly connected: boolean
  readonly revision: number
  readonly lagSeconds: number | undefined
}

export class RegistrySync extends Context.Tag("effect-lb/RegistrySync")<
  RegistrySync,
  {
    readonly status: Effect.Effect<SyncStatus>
    /**
     * Succeeds while an operator's change can be shared: the store answers and has been read since it
     * last (re)connected. Otherwise `RegistryUnavailable`: made here alone, it would diverge.
     */
    readonly writable: Effect.Effect<void, RegistryUnavailable>
    /** This run of the balancer: it signs its changes, holds its servers' leases, and announces itself. */
    readonly instance: string
  }
>() {}

/** The registry as the rest of the balancer sees it: every shared change is also queued to be written. */
const sharedRegistry = (
  inner: ServerRegistry["Type"],
  share: (change: SharedChange) => Effect.Effect<void>,
  loads: LoadSharing.LoadSharing,
  leases: { readonly self: Holder; readonly holders: ReadonlyMap<ServerId, Holder> }
): ServerRegistry["Type"] => {
  const idOf = (ref: ServerRef) => (typeof ref === "string" ? ref : ref.id)
  const shareServer = (server: ServerView, holder = leases.holders.get(server.id)) =>
    share({ _tag: "Server", record: recordOf(server, inner.unsafeOrigin(server.id) ?? "configured", holder) })
  return ServerRegistry.of({
    ...inner,
    add: (spec, origin) => Effect.tap(inner.add(spec, origin), (server) => shareServer(server)),
    // Its control connection is here: this run holds its lease (taking it over from another, if any).
    register: (spec) => Effect.tap(inner.register(spec), ({ server }) => shareServer(server, leases.self)),
    remove: (ref) =>
      Effect.tap(inner.remove(ref), (removed) => (removed ? share({ _tag: "Removed", id: idOf(ref) }) : Effect.void)),
    // Live and dead are each balancer's own verdicts; a drain is shared.
    setState: (ref, state) =>
      Effect.tap(inner.setState(ref, state), (server) =>
        state === "draining" && Option.isSome(server) ? shareServer(server.value) : Effect.void
      ),
    setWeight: (id, weight) =>
      Effect.tap(inner.setWeight(id, weight), (server) =>
        Option.isSome(server) ? shareServer(server.value) : Effect.void
      ),
    // A server's own report (not a probe's count): published with the next batch of loads.
    reportLoad: (ref, active, latencyMs) =>
      Effect.tap(inner.reportLoad(ref, active, latencyMs), () => {
        if (inner.unsafeOrigin(idOf(ref)) !== undefined) loads.reported(idOf(ref), active, latencyMs)
      })
  })
}

/** The lease keeper (`Leases.ts`), on what this balancer knows of the store. */
const keepLeases = (state: SyncState, config: SharedConfig, self: Holder, store: SharedStore["Type"]) =>
  Leases.keep(
    {
      self,
      synced: () => state.connected && state.synced,
      linkChanges: () => state.linkChanges,
      records: () => state.shared.values(),
      sign: () => ({ from: self.balancer, instance: self.instance, sequence: ++state.sequence })
    },
    { lease: config.lease, interval: config.leaseCheck, timeout: config.timeout }
  ).pipe(Effect.provideService(SharedStore, store))

export const make = (config: SharedConfig) =>
  Effect.gen(function* () {
    const registry = yield* ServerRegistry
    const balancer = yield* Balancer
    const store = yield* SharedStore
    const instance = Crypto.randomUUID()
    const state = initialState(instance)
    const self: Holder = { balancer: config.balancerId, instance }
    const inbox = yield* Queue.dropping<Inbound>(config.maxInbox)
    const outbox = yield* Queue.dropping<Outgoing>(config.maxPending)
    const tell = (event: Inbound) => {
      if (event._tag === "Connected" || event._tag === "Disconnected") {
        state.linkUp = event._tag === "Connected"
        state.linkChanges += 1
      }
      if (!Queue.unsafeOffer(inbox, event)) state.lost = true
    }
    const share = (change: SharedChange) =>
      Effect.flatMap(Queue.offer(outbox, { change, sequence: ++state.sequence }), (queued) => {
        noteHolder(state.holders, change)
        if (queued) noteOwn(state.ownLatest, keyOf(change), state.sequence, config.maxPending)
        return queued || park(state, config, change)
          ? Effect.void
          : Effect.logWarning(`too many changes waiting: ${describeChange(change)} kept here only`)
      })
    const apply = applier(registry, balancer)
    const write = writer(state, store, config, { from: config.balancerId, instance }, () => tell({ _tag: "Resync" }))
    const reported = reporter()
    const report = Effect.flatMap(Queue.size(outbox), (waiting) => reported(state, waiting))
    yield* report
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(outbox), write).pipe(Effect.zipRight(report))))
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          const first = yield* Queue.take(inbox)
          const rest = yield* Queue.takeAll(inbox)
          if (yield* batch(state, [first, ...rest], instance, apply, store))
            yield* resync(state, apply, registry, store, config, share, balancer)
          yield* reclaim(state, registry, share, self)
          yield* report
        })
      )
    )
    const loads = yield* LoadSharing.make(store, registry, loadConfig(config, instance), () => state.linkUp)
    yield* Effect.forkScoped(keepLeases(state, config, self, store))
    yield* store.listen({
      connected: () => tell({ _tag: "Connected" }),
      disconnected: (reason) => tell({ _tag: "Disconnected", reason }),
      published: (message) => tell({ _tag: "Published", message }),
      unreadable: (reason) => tell({ _tag: "Unreadable", reason })
    })
    return Context.make(ServerRegistry, sharedRegistry(registry, share, loads, { self, holders: state.holders })).pipe(
      Context.add(Balancer, {
        ...balancer,
        setStrategy: (name: string) => Effect.tap(balancer.setStrategy(name), () => share({ _tag: "Strategy", name }))
      }),
      Context.add(
        RegistrySync,
        RegistrySync.of({
          status: Effect.sync(() => ({
            connected: state.connected && state.synced,
            revision: state.revision,
            lagSeconds: state.lagSeconds
          })),
          writable: writable(state, store.describe),
          instance
        })
      )
    )
  })

/** Operators' changes are shared only while the store answers and has been read since it (re)connected. */
const writable = (state: SyncState, store: string): Effect.Effect<void, RegistryUnavailable> =>
  Effect.suspend(() =>
    state.connected && state.synced
      ? Effect.void
      : Effect.fail(
          new RegistryUnavailable({
            message: `the shared registry ${store} is unreachable: operator changes are refused until it answers, so that the balancers do not diverge (servers' registrations and load go on, and are shared when it answers)`
          })
        )
  )

const loadConfig = (config: SharedConfig, instance: string): LoadSharing.LoadConfig => ({
  from: config.balancerId,
  instance,
  interval: config.loadInterval ?? LoadSharing.defaultInterval,
  timeout: config.timeout,
  maxServers: config.maxServers ?? config.maxPending
})

/** The shared registry over the in-memory one: provides `ServerRegistry` and `Balancer` again, wrapped (and `RegistrySync`). */
export const layer = (
  config: SharedConfig
): Layer.Layer<ServerRegistry | Balancer | RegistrySync, never, ServerRegistry | Balancer | SharedStore> =>
  Layer.scopedContext(make(config))
