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
 */
import { Clock, Context, Duration, Effect, Layer, Metric, Option, Queue, Schedule } from "effect"
import * as Crypto from "node:crypto"
import { RegistryUnavailable } from "../../../domain/Errors.js"
import type { ServerId, ServerSpec, ServerView } from "../../../domain/Server.js"
import { Balancer } from "../Balancer.js"
import * as Metrics from "../Metrics.js"
import { type Origin, ServerRegistry, type ServerRef } from "../ServerRegistry.js"
import * as LoadSharing from "./LoadSharing.js"
import * as Leases from "./Leases.js"
import {
  type Holder,
  type Published,
  type ServerRecord,
  type SharedChange,
  SharedStore,
  type Signer,
  type Snapshot,
  StoreUnavailable
} from "./Store.js"

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

type Inbound =
  | { readonly _tag: "Connected" }
  | { readonly _tag: "Disconnected"; readonly reason: string }
  | { readonly _tag: "Published"; readonly message: Published }
  | { readonly _tag: "Unreadable"; readonly reason: string }
  | { readonly _tag: "Resync" }

/** A local change on its way to the store, with its number in this run. */
interface Outgoing {
  readonly change: SharedChange
  readonly sequence: number
}

/** What this balancer knows of the store. */
interface SyncState {
  /** This run of this balancer (random at each start): it signs its changes and holds its leases. */
  readonly instance: string
  /** The last revision applied (0: none yet). */
  revision: number
  /** The store's epoch at the last snapshot: another one means it restarted empty since. */
  epoch: string | undefined
  /** A snapshot has been applied, ever. */
  joined: boolean
  /** A snapshot has been applied since the store last (re)connected. */
  synced: boolean
  connected: boolean
  /** The last of this run's changes, counted. */
  sequence: number
  /**
   * The number of this run's latest change to each server (and the strategy), until it comes back; at
   * most `maxPending` (the oldest forgotten first: see `noteOwn`).
   */
  readonly ownLatest: Map<string, number>
  /** The holder of each self-registered server (its lease), as last shared or applied here. */
  readonly holders: Map<ServerId, Holder>
  /**
   * Servers this run holds whose lease others ended (it was not announced for a while: stalled, or cut
   * off from Redis) while it still holds their control connections: shared again, with it as holder.
   */
  readonly reclaim: Set<ServerId>
  /** How many times the store's link went down or came up (set at once, as `linkUp`). */
  linkChanges: number
  /** The store's connection is up, as its callbacks last said (set at once, not in turn). */
  linkUp: boolean
  /** Remote changes were dropped (the inbox was full). */
  lost: boolean
  /** Its being unreachable has been logged (once, until it answers again). */
  warned: boolean
  /** The servers the store holds, as far as this balancer knows. */
  shared: Map<ServerId, ServerRecord>
  /**
   * Local changes whose write failed (the store was unreachable), the last one per server (and for
   * the strategy): they win over the snapshot read when the store answers again, and are written then.
   */
  readonly unshared: Map<string, SharedChange>
  /** From the publication of the last change applied to its application here, in seconds (none yet: undefined). */
  lagSeconds: number | undefined
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

/** The record of a server as the registry shows it now (a `registered` one with its holder, if known). */
export const recordOf = (server: ServerView, origin: Origin, holder?: Holder): ServerRecord => ({
  id: server.id,
  host: server.host,
  port: server.port,
  weight: server.weight,
  ...(server.tls === true ? { tls: true } : {}),
  draining: server.state === "draining",
  origin,
  ...(origin === "registered" && holder !== undefined ? { holder } : {})
})

const specOf = (record: ServerRecord): ServerSpec => ({
  id: record.id,
  host: record.host,
  port: record.port,
  weight: record.weight,
  ...(record.tls === true ? { tls: true } : {})
})

const describeChange = (change: SharedChange) =>
  change._tag === "Server"
    ? `server ${change.record.id}`
    : change._tag === "Removed"
      ? `removal of ${change.id}`
      : `strategy ${change.name}`

/** What a change is about: a server's id, or the strategy. */
const keyOf = (change: SharedChange) =>
  change._tag === "Server" ? change.record.id : change._tag === "Removed" ? change.id : "\u0000strategy"

const remember = (shared: Map<ServerId, ServerRecord>, change: SharedChange) => {
  if (change._tag === "Server") shared.set(change.record.id, change.record)
  else if (change._tag === "Removed") shared.delete(change.id)
}

/** Notes a server's holder as `change` says it (none: no lease). */
const noteHolder = (holders: Map<ServerId, Holder>, change: SharedChange) => {
  if (change._tag === "Server" && change.record.holder !== undefined)
    holders.set(change.record.id, change.record.holder)
  else if (change._tag !== "Strategy") holders.delete(change._tag === "Server" ? change.record.id : change.id)
}

/**
 * Notes this run's latest change to `key`. An entry lives until that change comes back, so one whose
 * echo is lost (a gap answered by a snapshot) would stay: past `max` entries (as many as changes can
 * wait to be written) the least recently changed key is forgotten. Should an earlier change of this
 * run's to it still come back before its latest, that one is applied here for the moment until the
 * latest comes back and sets it right.
 */
const noteOwn = (ownLatest: Map<string, number>, key: string, sequence: number, max: number) => {
  ownLatest.delete(key)
  ownLatest.set(key, sequence)
  if (ownLatest.size <= max) return
  const oldest = ownLatest.keys().next()
  if (oldest.done !== true) ownLatest.delete(oldest.value)
}

/** Makes the local registry and balancer agree with the store's changes: only what differs is changed. */
const applier = (registry: ServerRegistry["Type"], balancer: Balancer["Type"]) => {
  const server = (record: ServerRecord) =>
    Effect.gen(function* () {
      const local = Option.getOrUndefined(yield* registry.get(record.id))
      const moved =
        local === undefined ||
        local.host !== record.host ||
        local.port !== record.port ||
        (local.tls === true) !== (record.tls === true)
      // The server as it is after the change (a view costs: one is built per change, not one per step).
      const now = moved
        ? yield* registry.add(specOf(record), record.origin)
        : local.weight !== record.weight
          ? Option.getOrUndefined(yield* registry.setWeight(record.id, record.weight))
          : local
      if (now === undefined) return
      if (record.draining && now.state !== "draining") yield* registry.setState(record.id, "draining")
      // A new registration ends a drain (the server registered again, somewhere).
      if (!record.draining && now.state === "draining") yield* registry.add(specOf(record), record.origin)
    }).pipe(
      Effect.catchTag("Busy", (busy) => Effect.logWarning(`shared server ${record.id} not taken: ${busy.message}`))
    )
  const strategy = (name: string) =>
    Effect.flatMap(balancer.strategy, (current) =>
      current === name
        ? Effect.void
        : balancer.setStrategy(name).pipe(
            Effect.tap(() => Effect.logInfo(`strategy set to ${name} (shared)`)),
            Effect.catchTag("InvalidRequest", (error) =>
              Effect.logWarning(`shared strategy not taken: ${error.message}`)
            )
          )
    )
  const change = (change: SharedChange): Effect.Effect<void> =>
    change._tag === "Server"
      ? server(change.record)
      : change._tag === "Removed"
        ? Effect.asVoid(registry.remove(change.id))
        : strategy(change.name)
  return { server, strategy, change }
}

type Applier = ReturnType<typeof applier>

/**
 * Applies a snapshot: every record, the removals since (unless the store went back), the strategy.
 * Says whether the store went back (Redis restarted empty, or was flushed).
 */
const applySnapshot = (state: SyncState, apply: Applier, registry: ServerRegistry["Type"], snapshot: Snapshot) =>
  Effect.gen(function* () {
    // Restarted empty: the revision went back, or (others having written since) the epoch changed.
    const wentBack = snapshot.revision < state.revision || (state.epoch !== undefined && snapshot.epoch !== state.epoch)
    const next = new Map(snapshot.servers.map((record) => [record.id, record] as const))
    // What changed here while the store was unreachable stands: it is written next.
    const mine = (id: string) => state.unshared.has(id)
    yield* Effect.forEach(snapshot.servers, (record) => (mine(record.id) ? Effect.void : apply.server(record)), {
      discard: true
    })
    // The holders as the store has them, except where a change of this run's is on its way.
    for (const record of snapshot.servers)
      if (!mine(record.id) && !state.ownLatest.has(record.id)) noteHolder(state.holders, { _tag: "Server", record })
    if (wentBack) {
      // Redis restarted empty (or was flushed): what is known here stands, and is written back (resync).
      yield* Effect.logWarning(
        `the shared registry restarted empty or was flushed (revision ${state.revision} before, ${snapshot.revision} now${snapshot.epoch === state.epoch ? "" : ", a new epoch"}): keeping the servers known here and sharing them again`
      )
    } else {
      for (const id of state.shared.keys())
        if (!next.has(id) && !mine(id)) {
          if (state.holders.get(id)?.instance === state.instance && Option.isSome(yield* registry.get(id))) {
            state.reclaim.add(id)
            continue
          }
          state.holders.delete(id)
          yield* registry.remove(id)
        }
    }
    if (snapshot.strategy !== undefined && !mine(keyOf({ _tag: "Strategy", name: "" })))
      yield* apply.strategy(snapshot.strategy)
    state.shared = next
    state.revision = snapshot.revision
    state.epoch = snapshot.epoch
    state.synced = true
    return wentBack
  })

/**
 * Writes back what this balancer knows (every server, with its origin, and the strategy) into a
 * store that went back: each balancer that saw it does, and applying a change twice changes nothing,
 * so the store converges on the union of what they knew.
 */
const reseed = (
  registry: ServerRegistry["Type"],
  balancer: Balancer["Type"],
  share: (change: SharedChange) => Effect.Effect<void>,
  holders: ReadonlyMap<ServerId, Holder>
) =>
  Effect.gen(function* () {
    const servers = yield* registry.list
    for (const server of servers) {
      const origin = registry.unsafeOrigin(server.id) ?? "configured"
      yield* share({ _tag: "Server", record: recordOf(server, origin, holders.get(server.id)) })
    }
    yield* share({ _tag: "Strategy", name: yield* balancer.strategy })
    yield* Effect.logInfo(`shared ${servers.length} server${servers.length === 1 ? "" : "s"} again, and the strategy`)
  })

/**
 * Reads a snapshot (each read within the deadline; retried while the store's connection is up),
 * applies it, then shares what changed here before it joined or while the store was unreachable.
 */
const resync = (
  state: SyncState,
  apply: Applier,
  registry: ServerRegistry["Type"],
  store: SharedStore["Type"],
  config: SharedConfig,
  share: (change: SharedChange) => Effect.Effect<void>,
  balancer: Balancer["Type"]
) =>
  Effect.gen(function* () {
    const read = yield* store.snapshot.pipe(
      Effect.timeoutFail({
        duration: config.timeout,
        onTimeout: () => new StoreUnavailable({ message: "no snapshot within the deadline" })
      }),
      // Until it answers, while the store's connection is up (once it is down, its return calls again).
      Effect.retry({
        schedule: Schedule.exponential(Duration.millis(100)).pipe(Schedule.union(Schedule.spaced(Duration.seconds(2)))),
        while: () => state.linkUp
      }),
      Effect.either
    )
    if (read._tag === "Left") {
      state.synced = false
      return yield* Effect.logWarning(`could not read the shared registry: ${read.left.message}`)
    }
    const first = !state.joined
    state.joined = true
    const wentBack = yield* applySnapshot(state, apply, registry, read.right)
    if (wentBack) yield* reseed(registry, balancer, share, state.holders)
    const replay = [...state.unshared.values()]
    state.unshared.clear()
    if (replay.length > 0)
      yield* Effect.logInfo(
        `sharing ${replay.length} change${replay.length === 1 ? "" : "s"} made ${first ? "before joining" : "while the shared registry was unreachable"}`
      )
    yield* Effect.forEach(replay, share, { discard: true })
    // The first balancer to join an empty store offers its strategy — only if none is there by the time
    // it is written: others writing back a Redis that restarted empty keep theirs.
    if (read.right.strategy === undefined)
      yield* share({ _tag: "Strategy", name: yield* balancer.strategy, ifUnset: true })
    if (first)
      yield* Effect.logInfo(
        `joined the shared registry ${store.describe} at revision ${read.right.revision} (${read.right.servers.length} servers)`
      )
  })

/** One batch of what the store said: applied in order, synchronously; a snapshot read after, if needed. */
const batch = (
  state: SyncState,
  events: Iterable<Inbound>,
  instance: string,
  apply: Applier,
  store: SharedStore["Type"]
) =>
  Effect.gen(function* () {
    let needsSnapshot = state.lost
    state.lost = false
    for (const event of events) {
      if (event._tag === "Published") {
        const { revision, change } = event.message
        if (!state.synced || needsSnapshot || revision <= state.revision) {
          needsSnapshot ||= !state.synced
          continue
        }
        if (revision > state.revision + 1) {
          needsSnapshot = true
          continue
        }
        state.revision = revision
        remember(state.shared, change)
        if (event.message.publishedAt !== undefined) {
          const now = yield* Clock.currentTimeMillis
          // Clocks of two hosts may disagree: a change is never applied before it was published.
          state.lagSeconds = Math.max(0, now - event.message.publishedAt) / 1000
        }
        // Its own change is local already; applied again (a no-op) unless a later own one is coming.
        if (event.message.instance === instance) {
          const latest = state.ownLatest.get(keyOf(change))
          if (latest !== undefined && latest > event.message.sequence) continue
          state.ownLatest.delete(keyOf(change))
        }
        if (
          change._tag === "Removed" &&
          change.leaseEnded === true &&
          state.holders.get(change.id)?.instance === instance
        ) {
          state.reclaim.add(change.id)
          continue
        }
        noteHolder(state.holders, change)
        yield* apply.change(change)
      } else if (event._tag === "Disconnected") {
        if (state.connected || !state.warned)
          yield* Effect.logWarning(
            `the shared registry ${store.describe} is unreachable (${event.reason}): serving what is known here; joining when it answers`
          )
        state.warned = true
        state.connected = false
        state.synced = false
      } else {
        if (event._tag === "Connected") {
          if (state.warned) yield* Effect.logInfo(`the shared registry ${store.describe} answers again`)
          state.connected = true
          state.warned = false
        }
        if (event._tag === "Unreadable")
          yield* Effect.logWarning(`unreadable message from the shared registry: ${event.reason}`)
        needsSnapshot = true
      }
    }
    return needsSnapshot && state.connected
  })

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

/** The registry's gauges (`/metrics`), as of now: joined or not, the revision, what waits to be written, the lag. */
const reporter = () => {
  const gauges = [Metrics.registryConnected, Metrics.registryRevision, Metrics.registryPending, Metrics.registrySyncLag]
  // Each set only when it changed: this runs after every batch of remote changes.
  const last: Array<number | undefined> = gauges.map(() => undefined)
  return (state: SyncState, waiting: number) =>
    Effect.suspend(() => {
      const now = [
        state.connected && state.synced ? 1 : 0,
        state.revision,
        state.unshared.size + waiting,
        state.lagSeconds
      ]
      const changed: Array<Effect.Effect<void>> = []
      gauges.forEach((gauge, i) => {
        const value = now[i]
        if (value === undefined || value === last[i]) return
        last[i] = value
        changed.push(Metric.set(gauge, value))
      })
      return changed.length === 0 ? Effect.void : Effect.all(changed, { discard: true })
    })
}

/** Keeps a change that could not be written, to be written when the store answers (false: too many). */
const park = (state: SyncState, config: SharedConfig, change: SharedChange) => {
  const kept = state.unshared.has(keyOf(change)) || state.unshared.size < config.maxPending
  if (kept) state.unshared.set(keyOf(change), change)
  return kept
}

/**
 * Writes one local change, within the deadline. Until it has joined (read a snapshot), a balancer's
 * changes wait, to be written when it does; so does one whose write fails.
 */
const writer =
  (
    state: SyncState,
    store: SharedStore["Type"],
    config: SharedConfig,
    signer: Omit<Signer, "sequence">,
    resync: () => void
  ) =>
  ({ change, sequence }: Outgoing) =>
    Effect.suspend(() =>
      state.synced
        ? store.write({ ...signer, sequence }, change)
        : Effect.sync(() => void park(state, config, change)).pipe(Effect.as(0))
    ).pipe(
      Effect.timeoutFail({
        duration: config.timeout,
        onTimeout: () => new StoreUnavailable({ message: "no answer within the deadline" })
      }),
      Effect.matchEffect({
        // 0: parked, not written (it has not joined); -1: written as not needed (an `ifUnset` strategy).
        onSuccess: (revision) => Effect.sync(() => revision !== 0 && state.unshared.delete(keyOf(change))),
        // Kept, and written after the next snapshot: read now (retried while the connection is up).
        onFailure: (error) => {
          const kept = park(state, config, change)
          if (state.synced) {
            state.synced = false
            resync()
          }
          return Effect.logWarning(
            `${describeChange(change)} not shared yet (${error.message}): ${kept ? "written when the shared registry answers" : "too many waiting, kept here only"}`
          )
        }
      })
    )

const initialState = (instance: string): SyncState => ({
  instance,
  revision: 0,
  epoch: undefined,
  synced: false,
  joined: false,
  connected: false,
  sequence: 0,
  ownLatest: new Map(),
  holders: new Map(),
  reclaim: new Set(),
  linkChanges: 0,
  lost: false,
  linkUp: false,
  warned: false,
  shared: new Map(),
  unshared: new Map(),
  lagSeconds: undefined
})

/**
 * Takes back the leases others ended while this run still holds the servers' control connections (it
 * was not announced for a while: its event loop stalled, or Redis was out of its reach): each is
 * shared again with this run as its holder, rather than dropped here too.
 */
const reclaim = (
  state: SyncState,
  registry: ServerRegistry["Type"],
  share: (change: SharedChange) => Effect.Effect<void>,
  self: Holder
) =>
  Effect.suspend(() => {
    if (state.reclaim.size === 0) return Effect.void
    const ids = [...state.reclaim]
    state.reclaim.clear()
    return Effect.forEach(
      ids,
      (id) =>
        Effect.flatMap(registry.get(id), (server) => {
          if (Option.isNone(server) || registry.unsafeOrigin(id) !== "registered") return Effect.void
          state.holders.set(id, self)
          return Effect.zipRight(
            Effect.logWarning(
              `server ${id}: its lease was ended by another balancer while this one was not announced; it is still registered here, so it is shared again with this balancer as its holder`
            ),
            share({ _tag: "Server", record: recordOf(server.value, "registered", self) })
          )
        }),
      { discard: true }
    )
  })

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
