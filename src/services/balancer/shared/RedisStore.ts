/**
 * The shared registry's store on Redis (through ioredis, loaded only when a balancer is given
 * `--registry`, so a balancer without one starts as fast as ever).
 *
 * Keys, under the namespace N (`--registry-namespace`, so several clusters can share one Redis):
 * `N:servers` (a hash: server id → its record, JSON), `N:strategy` (a string), `N:revision` (a
 * counter), and the channel `N:changes`, on which each change is published as JSON with the revision
 * it made. One Lua script writes a change, bumps the revision and publishes it: atomically, in order.
 * The servers' load reports go on their own channel, `N:loads`, one batch per message (no key, no
 * revision: a lost one is superseded within 100 ms).
 *
 * The cluster's balancers: `N:balancer:ID` (its announcement, JSON, with an expiry of a few seconds
 * that each heartbeat renews) and `N:balancers` (a set of the ids, so they are listed without a SCAN).
 * Redis expires a silent balancer by its own clock, so the balancers' clocks need not agree; an id
 * whose key has expired is taken out of the set when the list is read. A self-registered server's
 * record names the run holding it (its lease); one script removes the servers of a run no longer
 * announced, checking both facts again inside Redis.
 *
 * Two connections: one for commands, one subscribed to the channel. Commands are not queued while
 * Redis is unreachable (they fail at once; the caller decides); ioredis reconnects by itself, and each
 * time the subscription is back the listener is told to read a snapshot.
 */
import { Clock, Duration, Effect, Either, Layer, Schema, type Scope } from "effect"
import type { Redis, RedisOptions } from "ioredis"
import * as Crypto from "node:crypto"
import { ServerId } from "../../../domain/Server.js"
import {
  type Holder,
  type MemberRecord,
  MemberRecordFromJson,
  PublishedFromJson,
  type ServerRecord,
  ServerRecordFromJson,
  SharedChange,
  SharedStore,
  type Signer,
  type StoreEvents,
  StoreUnavailable,
  type LoadEvents,
  loadBatchText,
  tellLoads
} from "./Store.js"

/** Where the store is, from `--registry` (a password is never part of it: see `password`). */
export interface RegistryTarget {
  readonly host: string
  readonly port: number
  readonly db: number
  readonly tls: boolean
}

export interface RedisStoreConfig {
  readonly target: RegistryTarget
  readonly namespace: string
  /** From the environment (`EFFECT_LB_REGISTRY_PASSWORD`), never from argv. */
  readonly password?: string | undefined
  /** Connecting, and each command, must be done within this long. */
  readonly timeout: Duration.DurationInput
}

export const defaultPort = 6379
export const defaultNamespace = "effect-lb"
export const passwordVariable = "EFFECT_LB_REGISTRY_PASSWORD"

/** Why a `--registry` URL is refused, or where it points. */
export const parseRegistryUrl = (text: string): Either.Either<RegistryTarget, string> => {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return Either.left("not a URL")
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") return Either.left("not redis:// or rediss://")
  if (url.password !== "" || url.username !== "") return Either.left("a user or password in the URL")
  if (url.search !== "" || url.hash !== "") return Either.left("a query or fragment in the URL")
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1")
  if (host === "") return Either.left("no host")
  const db = url.pathname === "" || url.pathname === "/" ? 0 : Number(url.pathname.slice(1))
  if (!Number.isSafeInteger(db) || db < 0 || db > 65535) return Either.left("a database that is not a number")
  const port = url.port === "" ? defaultPort : Number(url.port)
  return Either.right({ host, port, db, tls: url.protocol === "rediss:" })
}

/** The URL, as a person may see it (there is never a password in it). */
export const formatTarget = (target: RegistryTarget) =>
  `${target.tls ? "rediss" : "redis"}://${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}` +
  (target.db === 0 ? "" : `/${target.db}`)

/** KEYS: revision, servers, strategy. ARGV: op, id, value, channel, from (JSON), instance (JSON), sequence, change (JSON), publishedAt. */
const writeScript = `
if ARGV[1] == 'strategy-if-unset' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local revision = redis.call('INCR', KEYS[1])
if ARGV[1] == 'put' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
elseif ARGV[1] == 'del' then redis.call('HDEL', KEYS[2], ARGV[2])
else redis.call('SET', KEYS[3], ARGV[3]) end
redis.call('PUBLISH', ARGV[4], '{"revision":' .. revision .. ',"from":' .. ARGV[5] .. ',"instance":' .. ARGV[6] .. ',"sequence":' .. ARGV[7] .. ',"change":' .. ARGV[8] .. ',"publishedAt":' .. ARGV[9] .. '}')
return revision
`

/**
 * KEYS: revision, servers, strategy, epoch. ARGV: an epoch to set if there is none. Everything, at one
 * revision, with the store's epoch: set by the first read after Redis started empty, so a restart shows
 * as a new epoch even when the revision has caught up again.
 */
const snapshotScript = `
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[4], epoch)
end
return { redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[3]) or '', redis.call('HGETALL', KEYS[2]), epoch }
`

/** KEYS: the set of ids, the member's key. ARGV: id, announcement (JSON), ttl (ms). */
const announceScript = `
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
`

/** KEYS: the set of ids, the member's key. ARGV: id, instance: removed only if it is this run's. */
const withdrawScript = `
local current = redis.call('GET', KEYS[2])
if current and cjson.decode(current).instance == ARGV[2] then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[1], ARGV[1])
end
`

/** KEYS: the set of ids. ARGV: the members' key prefix. The live announcements; expired ids leave the set. */
const membersScript = `
local found = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. id)
  if value then table.insert(found, value) else redis.call('SREM', KEYS[1], id) end
end
return found
`

/**
 * KEYS: revision, servers, the holder's announcement (N:balancer:ID). ARGV: the holder's id and run,
 * channel, from (JSON), instance (JSON), sequence, publishedAt, then each server: its id, its removal
 * (JSON). Nothing if that run is announced; else each server still `registered` and held by that run
 * is removed as the write script removes one (a revision and a publication each). Returns the ids removed.
 */
const expireScript = `
local announcement = redis.call('GET', KEYS[3])
if announcement then
  local ok, member = pcall(cjson.decode, announcement)
  if ok and type(member) == 'table' and member.instance == ARGV[2] then return {} end
end
local removed = {}
for i = 8, #ARGV - 1, 2 do
  local text = redis.call('HGET', KEYS[2], ARGV[i])
  local ok, record = false, nil
  if text then ok, record = pcall(cjson.decode, text) end
  if ok and type(record) == 'table' and record.origin == 'registered' and type(record.holder) == 'table'
    and record.holder.balancer == ARGV[1] and record.holder.instance == ARGV[2] then
    redis.call('HDEL', KEYS[2], ARGV[i])
    local revision = redis.call('INCR', KEYS[1])
    redis.call('PUBLISH', ARGV[3], '{"revision":' .. revision .. ',"from":' .. ARGV[4] .. ',"instance":' .. ARGV[5] .. ',"sequence":' .. ARGV[6] .. ',"change":' .. ARGV[i + 1] .. ',"publishedAt":' .. ARGV[7] .. '}')
    table.insert(removed, ARGV[i])
  end
end
return removed
`

const SnapshotReply = Schema.Tuple(Schema.String, Schema.String, Schema.Array(Schema.String), Schema.String)
const encodeChange = Schema.encodeSync(Schema.parseJson(SharedChange))
const encodeRecord = Schema.encodeSync(ServerRecordFromJson)
const decodeRecord = Schema.decodeUnknownEither(ServerRecordFromJson)
const decodePublished = Schema.decodeUnknownEither(PublishedFromJson)
const encodeMember = Schema.encodeSync(MemberRecordFromJson)
const decodeMember = Schema.decodeUnknownEither(MemberRecordFromJson)

const unavailable = (error: unknown) =>
  new StoreUnavailable({ message: error instanceof Error ? error.message : String(error) })

/** ioredis' options: no offline queue (fail at once when down), bounded waits, reconnects backing off to 500 ms (so a Redis back is joined within half a second, and the cluster converges well within 2 s). */
const optionsOf = (config: RedisStoreConfig): RedisOptions => {
  const timeout = Duration.toMillis(config.timeout)
  return {
    host: config.target.host,
    port: config.target.port,
    db: config.target.db,
    ...(config.password === undefined ? {} : { password: config.password }),
    ...(config.target.tls ? { tls: { servername: config.target.host } } : {}),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: timeout,
    commandTimeout: timeout,
    retryStrategy: (times: number) => Math.min(100 * times, 500)
  }
}

/** A client closed with the scope; its errors are reported through `close` events, not thrown. */
const client = (Client: typeof Redis, options: RedisOptions) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const redis = new Client(options)
      redis.on("error", () => undefined)
      return redis
    }),
    (redis) => Effect.sync(() => redis.disconnect())
  )

/**
 * Tells `events` of the link: `connected` each time both connections are (back) in place — the
 * subscription made and the command connection ready, so a snapshot or a write made on hearing it does
 * not fail on a connection still opening — `disconnected` when either is lost, and each message.
 */
const subscribe = (commands: Redis, subscriber: Redis, channel: string, events: StoreEvents) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      let lastError = "connection closed"
      let subscribed = false
      let up = false
      const tellIfUp = () => {
        if (up || !subscribed || commands.status !== "ready") return
        up = true
        events.connected()
      }
      const lost = () => {
        up = false
        events.disconnected(lastError)
      }
      const onError = (error: Error) => (lastError = error.message)
      const onSubscriberClose = () => {
        lost()
        subscribed = false
      }
      const onReady = () =>
        void subscriber.subscribe(channel).then(
          () => {
            subscribed = true
            tellIfUp()
          },
          (error: unknown) => events.disconnected(unavailable(error).message)
        )
      const onMessage = (from: string, text: string) => {
        if (from !== channel) return
        const message = decodePublished(text)
        if (Either.isRight(message)) events.published(message.right)
        else events.unreadable(text.slice(0, 200))
      }
      // Listed once: each is taken off again, as it was put on, when the scope closes.
      const listeners: ReadonlyArray<readonly [Redis, string, Parameters<Redis["on"]>[1]]> = [
        [subscriber, "error", onError],
        [subscriber, "close", onSubscriberClose],
        [subscriber, "ready", onReady],
        [subscriber, "message", onMessage],
        [commands, "error", onError],
        [commands, "close", lost],
        [commands, "ready", tellIfUp]
      ]
      for (const [redis, event, listener] of listeners) redis.on(event, listener)
      if (subscriber.status === "ready") onReady()
      return () => {
        for (const [redis, event, listener] of listeners) redis.off(event, listener)
      }
    }),
    (detach) => Effect.sync(detach)
  )

/** Ends a holder's leases (`expireScript`), signed by `signer`. */
const expireLeases =
  (commands: Redis, ns: string, channel: string) => (signer: Signer, holder: Holder, ids: ReadonlyArray<ServerId>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const keys = [`${ns}:revision`, `${ns}:servers`, `${ns}:balancer:${holder.balancer}`]
      const args = [
        holder.balancer,
        holder.instance,
        channel,
        JSON.stringify(signer.from),
        JSON.stringify(signer.instance),
        String(Math.trunc(signer.sequence)),
        String(now),
        ...ids.flatMap((id) => [id, encodeChange({ _tag: "Removed", id, leaseEnded: true })])
      ]
      return Effect.tryPromise({
        try: () => commands.eval(expireScript, keys.length, ...keys, ...args),
        catch: unavailable
      }).pipe(Effect.flatMap(Schema.decodeUnknown(Schema.Array(ServerId))), Effect.mapError(unavailable))
    })

export const make = (config: RedisStoreConfig): Effect.Effect<SharedStore["Type"], never, Scope.Scope> =>
  Effect.gen(function* () {
    const { Redis: Client } = yield* Effect.promise(() => import("ioredis"))
    const options = optionsOf(config)
    const commands = yield* client(Client, options)
    const subscriber = yield* client(Client, options)
    const ns = config.namespace
    const keys = [`${ns}:revision`, `${ns}:servers`, `${ns}:strategy`, `${ns}:epoch`] as const
    const channel = `${ns}:changes`
    const run = (script: string, args: ReadonlyArray<string>) =>
      Effect.tryPromise({ try: () => commands.eval(script, keys.length, ...keys, ...args), catch: unavailable })
    const write = (signer: Signer, change: SharedChange) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const [op, id, value] =
          change._tag === "Server"
            ? ["put", change.record.id, encodeRecord(change.record)]
            : change._tag === "Removed"
              ? ["del", change.id, ""]
              : [change.ifUnset === true ? "strategy-if-unset" : "strategy", "", change.name]
        const signed = [
          JSON.stringify(signer.from),
          JSON.stringify(signer.instance),
          String(Math.trunc(signer.sequence)),
          encodeChange(change),
          String(now)
        ]
        return Effect.map(run(writeScript, [op, id, value, channel, ...signed]), Number)
      })
    const snapshot = Effect.gen(function* () {
      const reply = yield* run(snapshotScript, [Crypto.randomUUID()]).pipe(
        Effect.flatMap(Schema.decodeUnknown(SnapshotReply)),
        Effect.mapError(unavailable)
      )
      const [revision, strategy, pairs, epoch] = reply
      const servers: Array<ServerRecord> = []
      for (let i = 1; i < pairs.length; i += 2) {
        const record = decodeRecord(pairs[i])
        if (Either.isRight(record)) servers.push(record.right)
        else yield* Effect.logWarning(`an unreadable server record in ${keys[1]}: ${pairs[i - 1] ?? ""}`)
      }
      return { revision: Number(revision), strategy: strategy === "" ? undefined : strategy, servers, epoch }
    })
    const memberKeys = (id: string) => [`${ns}:balancers`, `${ns}:balancer:${id}`]
    const evalOn = (script: string, keys: ReadonlyArray<string>, args: ReadonlyArray<string>) =>
      Effect.tryPromise({ try: () => commands.eval(script, keys.length, ...keys, ...args), catch: unavailable })
    const members = Effect.gen(function* () {
      const reply = yield* evalOn(membersScript, [`${ns}:balancers`], [`${ns}:balancer:`]).pipe(
        Effect.flatMap(Schema.decodeUnknown(Schema.Array(Schema.String))),
        Effect.mapError(unavailable)
      )
      const found: Array<MemberRecord> = []
      for (const text of reply) {
        const member = decodeMember(text)
        if (Either.isRight(member)) found.push(member.right)
      }
      return found
    })

    return SharedStore.of({
      describe: `${formatTarget(config.target)} (namespace ${ns})`,
      write,
      snapshot,
      listen: (events) => Effect.asVoid(subscribe(commands, subscriber, channel, events)),
      announce: (member, ttl) =>
        Effect.asVoid(
          evalOn(announceScript, memberKeys(member.id), [
            member.id,
            encodeMember(member),
            String(Math.max(1, Math.round(Duration.toMillis(ttl))))
          ])
        ),
      withdraw: ({ id, instance }) => Effect.asVoid(evalOn(withdrawScript, memberKeys(id), [id, instance])),
      members,
      ...loadsChannel(commands, subscriber, `${ns}:loads`),
      expireLeases: expireLeases(commands, ns, channel)
    })
  })

/**
 * The servers' load reports on their own channel, `N:loads`: a plain PUBLISH of one batch (no key,
 * no revision; a lost batch is superseded by the next one). Subscribed on the subscriber connection,
 * again each time it is ready; each message decoded here, at the edge.
 */
const loadsChannel = (
  commands: Redis,
  subscriber: Redis,
  channel: string
): Pick<SharedStore["Type"], "publishLoads" | "listenLoads"> => ({
  publishLoads: (batch) =>
    Effect.asVoid(
      Effect.tryPromise({ try: () => commands.publish(channel, loadBatchText(batch)), catch: unavailable })
    ),
  listenLoads: (events: LoadEvents) =>
    Effect.asVoid(
      Effect.acquireRelease(
        Effect.sync(() => {
          // A failed SUBSCRIBE is followed by a reconnect, and so by `ready` again.
          const onReady = () => void subscriber.subscribe(channel).then(undefined, () => undefined)
          const onMessage = (from: string, text: string) => {
            if (from === channel) tellLoads(events, text)
          }
          subscriber.on("ready", onReady)
          subscriber.on("message", onMessage)
          if (subscriber.status === "ready") onReady()
          return () => {
            subscriber.off("ready", onReady)
            subscriber.off("message", onMessage)
          }
        }),
        (detach) => Effect.sync(detach)
      )
    )
})

export const layer = (config: RedisStoreConfig): Layer.Layer<SharedStore> => Layer.scoped(SharedStore, make(config))
