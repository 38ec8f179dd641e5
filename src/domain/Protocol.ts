/**
 * Every wire message of PROTOCOL.md as a Schema: one union per port and direction. Peers send JSON;
 * nothing gets past the edge until it has been decoded by one of these.
 */
import { Schema } from "effect"
import { Busy, FileNotFound, InvalidRequest, NoServerAvailable, Unauthorized } from "./Errors.js"
import {
  EndpointFromString,
  FiniteNonNegative,
  Host,
  Port,
  ServerId,
  ServerLocation,
  ServerSpec,
  ServerView,
  Weight
} from "./Server.js"

/** A strategy's name on the wire (kebab-case); whether the balancer knows it is checked there. */
export const StrategyName = Schema.String.pipe(Schema.pattern(/^[a-z0-9]+(?:-[a-z0-9]+)*$/), Schema.maxLength(64))

const maxTokenLength = 1024

/**
 * The token rule, the same for every door (the balancer port, the admin API, `--token` of the
 * balancer, the server and `strategy`): 1–1,024 characters, no control characters, and no space
 * at either end (HTTP trims it off a header). Any other text may be in it, spaces and non-ASCII
 * included. A token is checked against this when a program starts.
 */
export const Token = Schema.String.pipe(
  Schema.filter((text) =>
    text.length === 0
      ? "the token is empty"
      : text.length > maxTokenLength
        ? `the token is ${text.length} characters long; at most ${maxTokenLength} are allowed`
        : /\p{Cc}/u.test(text)
          ? "the token contains a control character"
          : /^\s|\s$/u.test(text)
            ? "the token begins or ends with a space"
            : /\p{Cs}/u.test(text)
              ? "the token contains half of a surrogate pair"
              : true
  ),
  Schema.brand("Token")
)
export type Token = typeof Token.Type

/** A token as a request carries it, text of up to the rule's length; only the balancer's own token matches. */
const TokenField = Schema.String.pipe(Schema.maxLength(maxTokenLength))

// ---- balancer port: requests -------------------------------------------------------------------

/**
 * A client asks where to go; `exclude` names servers it has just failed on; `key` names the client
 * for strategies that keep a client on one server (consistent-hash: by default its address).
 */
export class Locate extends Schema.TaggedClass<Locate>()("Locate", {
  exclude: Schema.optional(Schema.Array(EndpointFromString).pipe(Schema.maxItems(1024))),
  key: Schema.optional(Schema.String.pipe(Schema.maxLength(256)))
}) {}
export class Register extends Schema.TaggedClass<Register>()("Register", {
  server: ServerSpec,
  token: Schema.optional(TokenField)
}) {}
/** `latencyMs`: the server's own smoothed time to answer a request (peak-sensitive), when it has one. */
export class Load extends Schema.TaggedClass<Load>()("Load", {
  active: Schema.NonNegativeInt,
  latencyMs: Schema.optional(FiniteNonNegative)
}) {}
/**
 * Leave the rotation gracefully: drained, then removed. On a server's own control connection it
 * needs nothing more; from elsewhere (an operator) it names the server, with the token if one is set.
 */
export class Deregister extends Schema.TaggedClass<Deregister>()("Deregister", {
  id: Schema.optional(ServerId),
  token: Schema.optional(TokenField)
}) {}
/** `after`: a page of a long report, the servers whose id comes after this one (the `next` of the page before). */
export class Status extends Schema.TaggedClass<Status>()("Status", {
  after: Schema.optional(ServerId)
}) {}
export class SetStrategy extends Schema.TaggedClass<SetStrategy>()("SetStrategy", {
  strategy: StrategyName,
  token: Schema.optional(TokenField)
}) {}

export const BalancerRequest = Schema.Union(Locate, Register, Load, Deregister, Status, SetStrategy)
export type BalancerRequest = typeof BalancerRequest.Type

// ---- balancer port: replies --------------------------------------------------------------------

export class Located extends Schema.TaggedClass<Located>()("Located", { server: ServerLocation }) {}
export class Registered extends Schema.TaggedClass<Registered>()("Registered", { id: ServerId }) {}
/** Where the balancer listens, as `host:port`: its port, and its proxy and admin server when it runs them. */
export const Listening = Schema.Struct({
  balancer: Schema.optional(Schema.String),
  proxy: Schema.optional(Schema.String),
  admin: Schema.optional(Schema.String)
})

/** The balancer itself: its version, when it started, how long it has run, where it listens. */
export const BalancerInfo = Schema.Struct({
  version: Schema.String,
  startedAt: Schema.NonNegativeInt,
  uptimeSeconds: Schema.NonNegativeInt,
  listening: Listening
})
export type BalancerInfo = typeof BalancerInfo.Type

/**
 * With `--registry`: the shared registry and the balancers in it, in the admin API's `/api/status`
 * and on the first page of the balancer port's `StatusReport`.
 */
export const ClusterView = Schema.Struct({
  registry: Schema.Struct({
    /** It answers and this balancer has read its state since it last (re)connected. */
    connected: Schema.Boolean,
    /** The last revision applied here. */
    revision: Schema.NonNegativeInt,
    namespace: Schema.String,
    /** `redis://host:port[/db]` (never a password). */
    url: Schema.String,
    /** From the publication of the last change applied here to its application (none yet: absent). */
    syncLagSeconds: Schema.optionalWith(FiniteNonNegative, { exact: true })
  }),
  /** The balancers that announced themselves within the last few seconds, this one included. */
  balancers: Schema.Array(
    Schema.Struct({
      id: Schema.String,
      addresses: Listening,
      version: Schema.String,
      startedAt: Schema.NonNegativeInt,
      lastSeenAt: Schema.NonNegativeInt,
      self: Schema.Boolean
    })
  ),
  /** The registry did not answer in time: `balancers` is the last list read. */
  stale: Schema.optionalWith(Schema.Boolean, { exact: true }),
  /** The balancer port only, when `balancers` is cut short to fit the line: how many there are in all. */
  total: Schema.optionalWith(Schema.NonNegativeInt, { exact: true })
})
export type ClusterView = typeof ClusterView.Type

/** What the proxy has done since the balancer started (HAProxy's frontend figures). */
export const ProxyFigures = Schema.Struct({
  /** Client connections open now. */
  open: Schema.NonNegativeInt,
  /** Client connections accepted in all, and per second over the last second. */
  accepted: Schema.NonNegativeInt,
  connectionsPerSecond: FiniteNonNegative,
  /** Bytes from clients and to them, open connections included. */
  bytesIn: Schema.NonNegativeInt,
  bytesOut: Schema.NonNegativeInt,
  /** Client connections closed unserved: at the connection limit, no server live, every backend tried failed. */
  turnedAway: Schema.Struct({
    limit: Schema.NonNegativeInt,
    noServer: Schema.NonNegativeInt,
    backendsFailed: Schema.NonNegativeInt,
    /** With `--accept-proxy` only: no valid PROXY protocol header in time (optional: added later). */
    proxyHeader: Schema.optional(Schema.NonNegativeInt)
  })
})
export type ProxyFigures = typeof ProxyFigures.Type

/**
 * On the balancer port a report is one line, so a long one comes in pages: `servers` in id order,
 * `total` servers in all, and `next` (the last id here) when more follow — send it as `after`.
 */
export class StatusReport extends Schema.TaggedClass<StatusReport>()("StatusReport", {
  strategy: StrategyName,
  servers: Schema.Array(ServerView),
  total: Schema.optional(Schema.NonNegativeInt),
  next: Schema.optional(ServerId),
  /** The admin API's `/api/status` only: the balancer itself. */
  balancer: Schema.optional(BalancerInfo),
  /** The admin API's `/api/status` only, while the balancer proxies: the proxy's figures. */
  proxy: Schema.optional(ProxyFigures),
  /** With `--registry`: the cluster, in the admin API's `/api/status` and on the balancer port's first page. */
  cluster: Schema.optional(ClusterView)
}) {}
export class Deregistered extends Schema.TaggedClass<Deregistered>()("Deregistered", { id: ServerId }) {}
export class StrategySet extends Schema.TaggedClass<StrategySet>()("StrategySet", { strategy: StrategyName }) {}

export const BalancerReply = Schema.Union(
  Located,
  Registered,
  Deregistered,
  StatusReport,
  StrategySet,
  InvalidRequest,
  NoServerAvailable,
  Unauthorized,
  Busy
)
export type BalancerReply = typeof BalancerReply.Type

// ---- server port: requests ---------------------------------------------------------------------

/** `after`: a page of a long list, the names after this one (the `next` of the page before). */
export class ListFiles extends Schema.TaggedClass<ListFiles>()("ListFiles", {
  after: Schema.optional(Schema.String.pipe(Schema.maxLength(4096)))
}) {}
/** `name` is any text on the wire: the file store, not the decoder, decides what is served. */
export class Download extends Schema.TaggedClass<Download>()("Download", {
  name: Schema.String.pipe(Schema.maxLength(4096))
}) {}
/** Whole seconds, at least 0; the server's own maximum is checked by the server. */
export class Compute extends Schema.TaggedClass<Compute>()("Compute", { seconds: Schema.NonNegativeInt }) {}
export class Ping extends Schema.TaggedClass<Ping>()("Ping", {}) {}

export const ServerRequest = Schema.Union(ListFiles, Download, Compute, Ping)
export type ServerRequest = typeof ServerRequest.Type

// ---- server port: replies ----------------------------------------------------------------------

/**
 * One line, so a long list comes in pages, in name order; `next` (the last name here) when more follow.
 * `sizes` (optional: servers before it did not send one) gives each listed file's size in bytes.
 */
export class FileList extends Schema.TaggedClass<FileList>()("FileList", {
  files: Schema.Record({ key: Schema.String, value: Schema.String }),
  next: Schema.optional(Schema.String),
  sizes: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.NonNegativeInt }))
}) {}
/** Announces exactly `size` raw bytes that follow this line. */
export class FileHeader extends Schema.TaggedClass<FileHeader>()("FileHeader", {
  name: Schema.String,
  size: Schema.NonNegativeInt
}) {}
export class Computed extends Schema.TaggedClass<Computed>()("Computed", { seconds: Schema.NonNegativeInt }) {}
export class Pong extends Schema.TaggedClass<Pong>()("Pong", {
  id: ServerId,
  active: Schema.NonNegativeInt,
  latencyMs: Schema.optional(FiniteNonNegative)
}) {}

export const ServerReply = Schema.Union(FileList, FileHeader, Computed, Pong, InvalidRequest, FileNotFound, Busy)
export type ServerReply = typeof ServerReply.Type

// ---- admin HTTP API: request bodies --------------------------------------------------------------

/** `POST /api/strategy`. */
export const StrategyChange = Schema.Struct({ strategy: StrategyName })
export type StrategyChange = typeof StrategyChange.Type

/** `POST /api/servers`: a server to add; its id defaults to `host:port`, its weight to 1. */
export const NewServer = Schema.Struct({
  id: Schema.optional(ServerId),
  host: Host,
  port: Port,
  weight: Schema.optional(Weight)
})
export type NewServer = typeof NewServer.Type

/** `PATCH /api/servers/ID`: a new weight. */
export const WeightChange = Schema.Struct({ weight: Weight })
export type WeightChange = typeof WeightChange.Type
