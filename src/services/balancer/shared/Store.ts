/**
 * The shared registry's store: where several balancers keep what they share (membership, weights,
 * draining, the strategy) and hear of each other's changes. Redis in production (`RedisStore.ts`);
 * an in-memory one here, of the same interface, for tests on the `TestClock`.
 *
 * Every change is atomic: it is written, the store's revision is bumped and the change is published
 * with that revision, in one step. A listener that sees a revision missing, or (re)connects, reads a
 * snapshot and applies the difference.
 */
import { Clock, Context, Duration, Effect, Schema, type Scope } from "effect"
import * as Crypto from "node:crypto"
import { FiniteNonNegative, Host, Port, ServerId, Weight } from "../../../domain/Server.js"

/**
 * The balancer run holding a self-registered server's control connection: the server's lease lasts as
 * long as that run's announcement (`MemberRecord`) does.
 */
export const Holder = Schema.Struct({
  /** Its `--balancer-id`. */
  balancer: Schema.String,
  /** That run of it (`MemberRecord.instance`). */
  instance: Schema.String
})
export type Holder = typeof Holder.Type

/** A server as the balancers share it: where it is, its weight, whether it drains, how it came. */
export const ServerRecord = Schema.Struct({
  id: ServerId,
  host: Host,
  port: Port,
  weight: Weight,
  tls: Schema.optionalWith(Schema.Boolean, { exact: true }),
  draining: Schema.Boolean,
  origin: Schema.Literal("registered", "configured", "file"),
  /** A `registered` server's lease: absent from older balancers' records (and then it never expires). */
  holder: Schema.optionalWith(Holder, { exact: true })
})
export type ServerRecord = typeof ServerRecord.Type

/** One change to what is shared. */
export const SharedChange = Schema.Union(
  Schema.TaggedStruct("Server", { record: ServerRecord }),
  Schema.TaggedStruct("Removed", {
    id: ServerId,
    /** Removed because its holder's lease ended (not by an operator): a holder still alive takes it back. */
    leaseEnded: Schema.optionalWith(Schema.Literal(true), { exact: true })
  }),
  Schema.TaggedStruct("Strategy", {
    name: Schema.String,
    /**
     * Written only if the store has no strategy yet (a balancer joining an empty store offers its own):
     * so one joining while the others write back a Redis that restarted empty does not overwrite theirs.
     */
    ifUnset: Schema.optionalWith(Schema.Literal(true), { exact: true })
  })
)
export type SharedChange = typeof SharedChange.Type

/** A change as published: with the revision it made, and the balancer that made it. */
export const Published = Schema.Struct({
  revision: Schema.Int.pipe(Schema.positive()),
  /** The balancer's id (`--balancer-id`), for people. */
  from: Schema.String,
  /** This run of that balancer (random at each start): it tells its own changes when they come back. */
  instance: Schema.String,
  /** That run's count of its changes: of two of its changes to one server, the later has the higher. */
  sequence: Schema.Int,
  change: SharedChange,
  /** When the writer published it (its clock, epoch ms): how late it is applied elsewhere (sync lag). */
  publishedAt: Schema.optionalWith(Schema.Number, { exact: true })
})
export type Published = typeof Published.Type

export const PublishedFromJson = Schema.parseJson(Published)
export const ServerRecordFromJson = Schema.parseJson(ServerRecord)

/** A balancer as it announces itself to the cluster (each heartbeat, kept a few seconds). */
export const MemberRecord = Schema.Struct({
  id: Schema.String,
  /** This run of it: a clean stop removes its own entry only, not a newer run's of the same id. */
  instance: Schema.String,
  addresses: Schema.Struct({
    balancer: Schema.optionalWith(Schema.String, { exact: true }),
    proxy: Schema.optionalWith(Schema.String, { exact: true }),
    admin: Schema.optionalWith(Schema.String, { exact: true })
  }),
  version: Schema.String,
  /** Epoch milliseconds, by its clock. */
  startedAt: Schema.Number,
  lastSeenAt: Schema.Number
})
export type MemberRecord = typeof MemberRecord.Type

export const MemberRecordFromJson = Schema.parseJson(MemberRecord)

/** Who writes a change. */
export interface Signer {
  readonly from: string
  readonly instance: string
  readonly sequence: number
}

/** Everything shared at one revision. */
export interface Snapshot {
  readonly revision: number
  readonly strategy: string | undefined
  readonly servers: ReadonlyArray<ServerRecord>
  /** This run of the store: a new one after it restarted empty (or was flushed). */
  readonly epoch: string
}

/** The store did not answer (down, unreachable, or past the deadline). */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  message: Schema.String
}) {}

/**
 * What a store tells its listener, synchronously, from its own callbacks: each must be quick and
 * must not throw (the listener queues them and applies them in batches).
 */
export interface StoreEvents {
  /** (Re)connected and subscribed: changes from now on will be heard; read a snapshot. */
  readonly connected: () => void
  readonly disconnected: (reason: string) => void
  /** A change, in revision order. */
  readonly published: (message: Published) => void
  /** A message on the channel that is not a change this version understands: read a snapshot. */
  readonly unreadable: (reason: string) => void
}

export class SharedStore extends Context.Tag("effect-lb/SharedStore")<
  SharedStore,
  {
    /** Where it is, for people (no password). */
    readonly describe: string
    /** Writes one change atomically; returns the revision it made (-1: an `ifUnset` strategy, not needed). */
    readonly write: (signer: Signer, change: SharedChange) => Effect.Effect<number, StoreUnavailable>
    readonly snapshot: Effect.Effect<Snapshot, StoreUnavailable>
    /** Tells `events` of the store for the scope's lifetime (at most one listener per store). */
    readonly listen: (events: StoreEvents) => Effect.Effect<void, never, Scope.Scope>
    /** Says this balancer is here, for `ttl` (a heartbeat renews it). */
    readonly announce: (member: MemberRecord, ttl: Duration.Duration) => Effect.Effect<void, StoreUnavailable>
    /** Takes this run's entry away (a clean stop). */
    readonly withdraw: (member: Pick<MemberRecord, "id" | "instance">) => Effect.Effect<void, StoreUnavailable>
    /** The balancers whose announcement has not expired. */
    readonly members: Effect.Effect<ReadonlyArray<MemberRecord>, StoreUnavailable>
    /** Publishes one batch of the servers' load reports (not kept: a lost one is superseded soon). */
    readonly publishLoads: (batch: LoadBatch) => Effect.Effect<void, StoreUnavailable>
    /** Tells `events` of every batch published, its own included, for the scope's lifetime (one listener). */
    readonly listenLoads: (events: LoadEvents) => Effect.Effect<void, never, Scope.Scope>
    /**
     * Ends `holder`'s leases, atomically: removes each of `ids` that is still a `registered` server
     * held by that run while that run is not announced (as `write` removes one: a revision and a
     * publication each). Returns the ids removed; another balancer having done it first removes none.
     */
    readonly expireLeases: (
      signer: Signer,
      holder: Holder,
      ids: ReadonlyArray<ServerId>
    ) => Effect.Effect<ReadonlyArray<ServerId>, StoreUnavailable>
  }
>() {}

// ---- in memory, for tests ------------------------------------------------------------------------

/** One in-memory "Redis" that several balancers' stores (`connect`) share, with knobs for tests. */
export interface MemoryBackend {
  /** A store for one balancer, connected to this backend. */
  readonly connect: () => SharedStore["Type"]
  /** Down: writes and snapshots fail, listeners are told; up again: they are told they reconnected. */
  readonly setUp: (up: boolean) => void
  /** The next `count` published messages are lost on their way to every listener (a gap). */
  readonly dropNext: (count: number) => void
  /** Writes as another balancer would (its change is published to every listener). */
  readonly writeAs: (signer: Signer, change: SharedChange, publishedAt?: number) => number
  /** Loses everything, revision included (Redis restarted empty): listeners are told it went and came back. */
  readonly restartEmpty: () => void
  readonly revision: () => number
  /** Writes made so far, in order. */
  readonly writes: ReadonlyArray<Published>
  /** Load batches published so far, in order. */
  readonly loadBatches: ReadonlyArray<LoadBatch>
  /** Delivers a raw message on the loads channel to every listener, as Redis would (decoded at the edge). */
  readonly sayOnLoads: (text: string) => void
}

const applyTo = (servers: Map<string, ServerRecord>, strategy: { name: string | undefined }, change: SharedChange) => {
  if (change._tag === "Server") servers.set(change.record.id, change.record)
  else if (change._tag === "Removed") servers.delete(change.id)
  else strategy.name = change.name
}

/** The balancers' announcements in memory, each expiring by the clock (`TestClock` in tests). */
const memoryMembers = (isUp: () => boolean, unavailable: StoreUnavailable) => {
  const members = new Map<string, { readonly record: MemberRecord; readonly expiresAt: number }>()
  /** Whether `holder`'s run is announced now. */
  const announced = (holder: Holder, now: number) => {
    const entry = members.get(holder.balancer)
    return entry !== undefined && entry.expiresAt > now && entry.record.instance === holder.instance
  }
  const store: Pick<SharedStore["Type"], "announce" | "withdraw" | "members"> = {
    announce: (member, ttl) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        isUp()
          ? Effect.sync(() => void members.set(member.id, { record: member, expiresAt: now + Duration.toMillis(ttl) }))
          : Effect.fail(unavailable)
      ),
    withdraw: ({ id, instance }) =>
      Effect.suspend(() => {
        if (!isUp()) return Effect.fail(unavailable)
        if (members.get(id)?.record.instance === instance) members.delete(id)
        return Effect.void
      }),
    members: Effect.flatMap(Clock.currentTimeMillis, (now) =>
      isUp()
        ? Effect.succeed([...members.values()].filter((entry) => entry.expiresAt > now).map((entry) => entry.record))
        : Effect.fail(unavailable)
    )
  }
  return { store, announced, clear: () => members.clear() }
}

/** Ends leases in memory as the Redis script does: nothing while the run is announced. */
const memoryExpire =
  (
    servers: ReadonlyMap<string, ServerRecord>,
    announced: (holder: Holder, now: number) => boolean,
    writeAs: (signer: Signer, change: SharedChange, publishedAt?: number) => number,
    isUp: () => boolean,
    unavailable: StoreUnavailable
  ): SharedStore["Type"]["expireLeases"] =>
  (signer, holder, ids) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (!isUp()) return Effect.fail(unavailable)
      if (announced(holder, now)) return Effect.succeed([])
      const held = (record: ServerRecord | undefined) =>
        record?.origin === "registered" &&
        record.holder?.balancer === holder.balancer &&
        record.holder.instance === holder.instance
      const removed = ids.filter((id) => held(servers.get(id)))
      for (const id of removed) writeAs(signer, { _tag: "Removed", id, leaseEnded: true }, now)
      return Effect.succeed(removed)
    })

export const makeMemoryBackend = (): MemoryBackend => {
  const servers = new Map<string, ServerRecord>()
  const strategy: { name: string | undefined } = { name: undefined }
  const listeners = new Set<StoreEvents>()
  const writes: Array<Published> = []
  let revision = 0
  let epoch = Crypto.randomUUID()
  let up = true
  let dropping = 0
  const unavailable = new StoreUnavailable({ message: "the in-memory store is down" })
  const members = memoryMembers(() => up, unavailable)
  const loads = memoryLoads(() => up, unavailable)
  const writeAs = (signer: Signer, change: SharedChange, publishedAt?: number) => {
    if (change._tag === "Strategy" && change.ifUnset === true && strategy.name !== undefined) return -1
    applyTo(servers, strategy, change)
    const message: Published = {
      revision: ++revision,
      from: signer.from,
      instance: signer.instance,
      sequence: signer.sequence,
      change,
      ...(publishedAt === undefined ? {} : { publishedAt })
    }
    writes.push(message)
    if (dropping > 0) dropping -= 1
    else for (const listener of listeners) listener.published(message)
    return revision
  }
  return {
    writes,
    loadBatches: loads.batches,
    sayOnLoads: loads.say,
    revision: () => revision,
    dropNext: (count) => (dropping = count),
    setUp: (next) => {
      if (next === up) return
      up = next
      for (const listener of listeners) {
        if (up) listener.connected()
        else listener.disconnected("the in-memory store is down")
      }
    },
    writeAs,
    restartEmpty: () => {
      servers.clear()
      members.clear()
      strategy.name = undefined
      revision = 0
      epoch = Crypto.randomUUID()
      for (const listener of listeners) listener.disconnected("restarted")
      for (const listener of listeners) listener.connected()
    },
    connect: () =>
      SharedStore.of({
        describe: "memory",
        write: (signer, change) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            up ? Effect.succeed(writeAs(signer, change, now)) : Effect.fail(unavailable)
          ),
        snapshot: Effect.suspend(() =>
          up
            ? Effect.succeed({ revision, strategy: strategy.name, servers: [...servers.values()], epoch })
            : Effect.fail(unavailable)
        ),
        listen: (events) =>
          Effect.acquireRelease(
            Effect.sync(() => {
              listeners.add(events)
              if (up) events.connected()
            }),
            () => Effect.sync(() => listeners.delete(events))
          ),
        ...members.store,
        ...loads.store,
        expireLeases: memoryExpire(servers, members.announced, writeAs, () => up, unavailable)
      })
  }
}

// ---- the servers' load reports -------------------------------------------------------------------

/** Reports in one batch, at most (a balancer holds at most this many servers, by default). */
export const maxLoadReports = 100_000

/** A server's load, as it reported it to one balancer. */
export const LoadReport = Schema.Struct({
  id: ServerId,
  active: Schema.NonNegativeInt,
  latencyMs: Schema.optionalWith(FiniteNonNegative, { exact: true })
})
export type LoadReport = typeof LoadReport.Type

/** The latest load report of each server that reported since the balancer's last batch. */
export const LoadBatch = Schema.Struct({
  /** The balancer's id (`--balancer-id`), for people. */
  from: Schema.String,
  /** This run of that balancer: it tells its own batches when they come back. */
  instance: Schema.String,
  /** When it was published (its clock, epoch ms). */
  publishedAt: Schema.Number,
  reports: Schema.Array(LoadReport).pipe(Schema.maxItems(maxLoadReports))
})
export type LoadBatch = typeof LoadBatch.Type

export const LoadBatchFromJson = Schema.parseJson(LoadBatch)

/** What a store tells of the loads channel, synchronously, from its own callbacks (quick, never throwing). */
export interface LoadEvents {
  readonly loads: (batch: LoadBatch) => void
  /** A message on the loads channel that is not a batch this version understands (it is dropped). */
  readonly unreadable: (reason: string) => void
}

const encodeLoadBatch = Schema.encodeSync(LoadBatchFromJson)
const decodeLoadBatch = Schema.decodeUnknownEither(LoadBatchFromJson)

/** Decodes one message of the loads channel for `events`: a batch, or unreadable (the first 200 characters said). */
export const tellLoads = (events: LoadEvents, text: string) => {
  const batch = decodeLoadBatch(text)
  if (batch._tag === "Right") events.loads(batch.right)
  else events.unreadable(text.slice(0, 200))
}

/** The encoded batch, as published. */
export const loadBatchText = (batch: LoadBatch) => encodeLoadBatch(batch)

/** The loads channel in memory: each batch goes through JSON to every listener, as through Redis. */
const memoryLoads = (isUp: () => boolean, unavailable: StoreUnavailable) => {
  const listeners = new Set<LoadEvents>()
  const batches: Array<LoadBatch> = []
  const say = (text: string) => {
    for (const listener of listeners) tellLoads(listener, text)
  }
  const store: Pick<SharedStore["Type"], "publishLoads" | "listenLoads"> = {
    publishLoads: (batch) =>
      Effect.suspend(() => {
        if (!isUp()) return Effect.fail(unavailable)
        batches.push(batch)
        say(loadBatchText(batch))
        return Effect.void
      }),
    listenLoads: (events) =>
      Effect.acquireRelease(
        Effect.sync(() => void listeners.add(events)),
        () => Effect.sync(() => void listeners.delete(events))
      )
  }
  return { store, batches: batches as ReadonlyArray<LoadBatch>, say }
}
