/**
 * What a balancer knows of the shared store (`SyncState`), one mutable value shared by the fibers of
 * `SharedRegistry.ts` (the applier in `Sync.ts`, the writer in `Writer.ts`), and the small
 * bookkeeping on it: what a change is about, a server's record and holder, this run's own latest
 * changes.
 */
import type { ServerId, ServerView } from "../../../domain/Server.js"
import type { Origin } from "../ServerRegistry.js"
import type { Holder, ServerRecord, SharedChange } from "./Store.js"

/** What this balancer knows of the store. */
export interface SyncState {
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

export const initialState = (instance: string): SyncState => ({
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

export const describeChange = (change: SharedChange) =>
  change._tag === "Server"
    ? `server ${change.record.id}`
    : change._tag === "Removed"
      ? `removal of ${change.id}`
      : `strategy ${change.name}`

/** What a change is about: a server's id, or the strategy. */
export const keyOf = (change: SharedChange) =>
  change._tag === "Server" ? change.record.id : change._tag === "Removed" ? change.id : "\u0000strategy"

/** Notes a server's holder as `change` says it (none: no lease). */
export const noteHolder = (holders: Map<ServerId, Holder>, change: SharedChange) => {
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
export const noteOwn = (ownLatest: Map<string, number>, key: string, sequence: number, max: number) => {
  ownLatest.delete(key)
  ownLatest.set(key, sequence)
  if (ownLatest.size <= max) return
  const oldest = ownLatest.keys().next()
  if (oldest.done !== true) ownLatest.delete(oldest.value)
}
