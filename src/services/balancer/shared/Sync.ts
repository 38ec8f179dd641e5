/**
 * The store's news, applied here (see `SharedRegistry.ts`): what its callbacks said (`Inbound`),
 * taken in batches by one fiber and applied in order, synchronously, straight to the inner registry
 * and balancer (`applier`: only what differs is changed); a snapshot read and its difference applied
 * when a revision is missing, on a (re)connect or an unreadable message (`resync`); a store that went
 * back written again (`reseed`); and the leases others ended while this run still holds the servers
 * taken back (`reclaim`).
 */
import { Clock, Duration, Effect, Option, Schedule } from "effect"
import type { ServerId, ServerSpec } from "../../../domain/Server.js"
import type { Balancer } from "../Balancer.js"
import type { ServerRegistry } from "../ServerRegistry.js"
import {
  type Holder,
  type Published,
  type ServerRecord,
  type SharedChange,
  type SharedStore,
  type Snapshot,
  StoreUnavailable
} from "./Store.js"
import { keyOf, noteHolder, recordOf, type SyncState } from "./SyncState.js"

export type Inbound =
  | { readonly _tag: "Connected" }
  | { readonly _tag: "Disconnected"; readonly reason: string }
  | { readonly _tag: "Published"; readonly message: Published }
  | { readonly _tag: "Unreadable"; readonly reason: string }
  | { readonly _tag: "Resync" }

const specOf = (record: ServerRecord): ServerSpec => ({
  id: record.id,
  host: record.host,
  port: record.port,
  weight: record.weight,
  ...(record.tls === true ? { tls: true } : {})
})

const remember = (shared: Map<ServerId, ServerRecord>, change: SharedChange) => {
  if (change._tag === "Server") shared.set(change.record.id, change.record)
  else if (change._tag === "Removed") shared.delete(change.id)
}

/** Makes the local registry and balancer agree with the store's changes: only what differs is changed. */
export const applier = (registry: ServerRegistry["Type"], balancer: Balancer["Type"]) => {
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
export const resync = (
  state: SyncState,
  apply: Applier,
  registry: ServerRegistry["Type"],
  store: SharedStore["Type"],
  config: { readonly timeout: Duration.DurationInput },
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
export const batch = (
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

/**
 * Takes back the leases others ended while this run still holds the servers' control connections (it
 * was not announced for a while: its event loop stalled, or Redis was out of its reach): each is
 * shared again with this run as its holder, rather than dropped here too.
 */
export const reclaim = (
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
