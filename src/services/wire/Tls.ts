/**
 * TLS for every port effect-lb listens on and every connection it opens, on `node:tls` (OpenSSL).
 *
 * - A listener's certificate is an `Identity` (certificate and key files). `makeListenerTls` reads
 *   and checks it once; `reload` reads it again and hands the new one to every server made from it
 *   (`setSecureContext`): new handshakes use it, connections already open keep theirs, nothing drops.
 * - A connecting side's `Trust`: the CA certificates it accepts a peer's certificate from (a file),
 *   or the system's when none is given. The peer's certificate must name the host connected to.
 * - Each failure a person can meet says what it is in words, the OpenSSL code in brackets: a key
 *   that is not the certificate's, a peer whose CA is not trusted, a plain-text peer on a TLS port.
 *
 * Handshake failures on a listener are counted (`effect_lb_tls_handshake_failures_total{listener,
 * reason}`) and logged at most once per 10 s per listener, so a flood of them cannot flood the log.
 */
import { type Clock, Duration, Effect, Metric, MetricLabel, Runtime, Schema } from "effect"
import { X509Certificate } from "node:crypto"
import * as Fs from "node:fs"
import { isIP } from "node:net"
import * as Tls from "node:tls"

/** A certificate or key file that cannot serve: `cert.pem: not a PEM certificate (…)`. */
export class TlsRefused extends Schema.TaggedError<TlsRefused>()("TlsRefused", {
  file: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.file}: ${this.reason}`
  }
}

/** A listener's certificate: PEM files, the certificate (with its chain, leaf first) and its private key. */
export interface Identity {
  readonly cert: string
  readonly key: string
}

/** A certificate or key file is small: this is far beyond any real one. */
const maxPemBytes = 1024 * 1024

/** Why a file cannot be read, in words with the system's code: `no such file (ENOENT)`. */
export const describeFileError = (cause: unknown): string => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
  if (code === "ENOENT") return "no such file (ENOENT)"
  if (code === "EACCES") return "permission denied (EACCES)"
  if (code === "EISDIR") return "a folder, not a file (EISDIR)"
  return cause instanceof Error ? cause.message : String(cause)
}

/** A file's bytes, at most `maxBytes`, or why not. */
export const readSmallFile = (file: string, maxBytes: number): Effect.Effect<Buffer, TlsRefused> =>
  Effect.try({
    try: () => {
      const size = Fs.statSync(file).size
      if (size > maxBytes) throw new Error(`${size} bytes, more than ${maxBytes}`)
      return Fs.readFileSync(file)
    },
    catch: (cause) => new TlsRefused({ file, reason: `cannot be read: ${describeFileError(cause)}` })
  })

/** OpenSSL's reason without its library prefix: `key values mismatch`. */
const opensslReason = (error: unknown): string => {
  const text = error instanceof Error ? error.message : String(error)
  const match = /:([^:]+)$/.exec(text.split("\n")[0] ?? text)
  return (match?.[1] ?? text).trim()
}

/** The PEM certificates in `pem`, parsed; refused when there is none or one is not a certificate. */
const certificates = (file: string, pem: Buffer): Effect.Effect<ReadonlyArray<X509Certificate>, TlsRefused> =>
  Effect.try({
    try: () => {
      const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)
      if (blocks === null) throw new Error("no PEM certificate in it (no BEGIN CERTIFICATE block)")
      return blocks.map((block) => new X509Certificate(block))
    },
    catch: (cause) =>
      new TlsRefused({
        file,
        reason: `not a PEM certificate: ${cause instanceof Error && cause.message.startsWith("no PEM") ? cause.message : opensslReason(cause)}`
      })
  })

/** What a loaded certificate is, for logs: `CN=localhost, valid until 2027-01-01T00:00:00.000Z`. */
export interface Loaded {
  readonly options: Tls.SecureContextOptions
  readonly subject: string
  readonly validTo: Date
  readonly names: string
}

/** Reads an identity and checks that it can serve: both PEM, and the key the certificate's. */
export const loadIdentity = (identity: Identity): Effect.Effect<Loaded, TlsRefused> =>
  Effect.gen(function* () {
    const cert = yield* readSmallFile(identity.cert, maxPemBytes)
    const key = yield* readSmallFile(identity.key, maxPemBytes)
    const [leaf] = yield* certificates(identity.cert, cert)
    const options = { cert, key }
    yield* Effect.try({
      try: () => Tls.createSecureContext(options),
      catch: (cause) => {
        const reason = opensslReason(cause)
        return new TlsRefused({
          file: identity.key,
          reason: /mismatch/i.test(reason)
            ? `is not the private key of the certificate in ${identity.cert} (${reason})`
            : `not a usable PEM private key (${reason})`
        })
      }
    })
    return {
      options,
      subject: leaf === undefined ? "?" : leaf.subject.replace(/\n/g, ", "),
      validTo: leaf === undefined ? new Date(0) : new Date(leaf.validTo),
      names: leaf?.subjectAltName ?? "none"
    }
  })

/** A certificate's lines for the log at load: what it is, and a warning when it has expired or soon will. */
const announce = (where: string, loaded: Loaded, now: number) => {
  const days = Math.floor((loaded.validTo.getTime() - now) / 86_400_000)
  const what = `TLS on ${where}: certificate ${loaded.subject} (names: ${loaded.names}), valid until ${loaded.validTo.toISOString()}`
  if (days < 0) return Effect.logWarning(`${what}: it has EXPIRED; clients will refuse it`)
  if (days < 14) return Effect.logWarning(`${what}: it expires in ${days} day${days === 1 ? "" : "s"}`)
  return Effect.logInfo(what)
}

const handshakeFailures = Metric.counter("effect_lb_tls_handshake_failures_total", {
  description: "TLS handshakes that failed on a listener, by listener and reason",
  incremental: true
})

/** A handshake failure's kind, for the metric's label and the log line. */
const failureKind = (error: unknown): { readonly label: string; readonly words: string } => {
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : ""
  if (code === "PLAIN_TEXT") return { label: "plain_text", words: "the client spoke plain text, not TLS" }
  if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|PACKET_LENGTH_TOO_LONG|RECORD_LENGTH_MISMATCH/.test(code))
    return { label: "plain_text", words: `the client spoke plain text, not TLS (${code})` }
  if (code === "ERR_TLS_HANDSHAKE_TIMEOUT" || code === "ETIMEDOUT")
    return { label: "timeout", words: `no TLS handshake in time (${code})` }
  if (code === "ECONNRESET" || code === "EPIPE")
    return { label: "reset", words: `the client went away during the handshake (${code})` }
  if (/ALERT|CERTIFICATE|UNKNOWN_CA/.test(code))
    return { label: "refused_by_client", words: `the client refused the certificate (${code})` }
  if (/NO_SHARED_CIPHER|UNSUPPORTED_PROTOCOL|VERSION_TOO_LOW|NO_PROTOCOLS/.test(code))
    return { label: "no_common_version", words: `no TLS version or cipher in common with the client (${code})` }
  return { label: "other", words: code === "" ? opensslReason(error) : `${opensslReason(error)} (${code})` }
}

/** A listener's TLS: its certificate, reloadable; every server made from it follows a reload. */
export interface ListenerTls {
  /** What the listener is called in logs and in the metric's `listener` label: `balancer`, `proxy`, `server`. */
  readonly name: string
  /** The options to create a server (or a server-side TLS socket) with now. */
  readonly options: () => Tls.SecureContextOptions
  /** Follows reloads until `forget`. */
  readonly attach: (server: Tls.Server) => void
  readonly forget: (server: Tls.Server) => void
  /** Reads the files again; a bad one changes nothing and is the error. */
  readonly reload: (identity: Identity) => Effect.Effect<void, TlsRefused>
  /** Serves `loaded` (read and checked already, by `loadIdentity`) from the next handshake on. */
  readonly install: (loaded: Loaded) => Effect.Effect<void>
  /** Counts and (at most once per 10 s) logs a failed handshake from `from`. */
  readonly failed: (error: unknown, from: string) => void
}

/** A listener's client that has not finished its handshake in this long is closed (and counted). */
export const handshakeTimeout = Duration.seconds(10)

/** Log lines about failed handshakes per listener: the first, then one per this many ms at most. */
const logEveryMs = 10_000

/** Reads the identity and makes the listener's TLS; `name` says which listener in logs and metrics. */
export const makeListenerTls = (name: string, identity: Identity): Effect.Effect<ListenerTls, TlsRefused> =>
  Effect.gen(function* () {
    const clock = yield* Effect.clock
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    let current = yield* loadIdentity(identity)
    yield* announce(name, current, clock.unsafeCurrentTimeMillis())
    const servers = new Set<Tls.Server>()
    const log = failureLog(name, clock, runFork)
    const install = (loaded: Loaded) =>
      Effect.suspend(() => {
        current = loaded
        for (const server of servers) server.setSecureContext(loaded.options)
        return announce(name, loaded, clock.unsafeCurrentTimeMillis())
      })
    return {
      name,
      options: () => current.options,
      attach: (server) => servers.add(server),
      forget: (server) => servers.delete(server),
      reload: (next) => Effect.flatMap(loadIdentity(next), install),
      install,
      failed: (error, from) => {
        const kind = failureKind(error)
        handshakeFailures.unsafeUpdate(1, [MetricLabel.make("listener", name), MetricLabel.make("reason", kind.label)])
        log(kind.words, from)
      }
    }
  })

/** Logs the first failure and then at most one line per `logEveryMs`, saying how many it left out. */
const failureLog = (name: string, clock: Clock.Clock, runFork: (effect: Effect.Effect<void>) => unknown) => {
  let last = Number.NEGATIVE_INFINITY
  let unsaid = 0
  return (words: string, from: string) => {
    const now = clock.unsafeCurrentTimeMillis()
    if (now - last < logEveryMs) {
      unsaid += 1
      return
    }
    const more =
      unsaid === 0 ? "" : ` (and ${unsaid} more failed handshake${unsaid === 1 ? "" : "s"} since the last line)`
    last = now
    unsaid = 0
    runFork(Effect.logWarning(`TLS on ${name}: a handshake from ${from} failed: ${words}${more}`))
  }
}

/** The CA certificates a connecting side accepts its peer's certificate from; none given: the system's. */
export interface Trust {
  readonly ca?: Buffer
  /** The option that names the CA file on this side, for the hint when a peer is not trusted (default `--ca`). */
  readonly option?: string
}

/** The system's CAs. */
export const systemTrust: Trust = {}

/** The trust a long-running side uses for its next connections; a reload replaces `current`. */
export interface TrustRef {
  current: Trust
}

/** Reads a CA file (PEM, one or more certificates); `option` is the one that named it. */
export const loadTrust = (file: string, option = "--ca"): Effect.Effect<Trust, TlsRefused> =>
  Effect.gen(function* () {
    const ca = yield* readSmallFile(file, maxPemBytes)
    yield* certificates(file, ca)
    return { ca, option }
  })

/**
 * What the common reasons a TLS connect fails mean, for a person; the code stays in brackets.
 * `caOption` is the option that names the CA file on this side (`--ca`, `--backend-ca`).
 */
export const describeTlsReason = (error: unknown, caOption = "--ca"): string => {
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : ""
  switch (code) {
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "UNABLE_TO_GET_ISSUER_CERT":
      return `its certificate is not signed by a CA trusted here (${code}): give the CA that signed it with ${caOption}`
    case "CERT_HAS_EXPIRED":
      return `its certificate has expired (${code})`
    case "CERT_NOT_YET_VALID":
      return `its certificate is not valid yet (${code})`
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `its certificate is not for this host (${code}: ${"reason" in (error as object) ? String((error as { reason: unknown }).reason) : opensslReason(error)})`
    case "ERR_SSL_WRONG_VERSION_NUMBER":
    case "ERR_SSL_PACKET_LENGTH_TOO_LONG":
    case "ERR_SSL_RECORD_LENGTH_MISMATCH":
      return `it does not speak TLS (${code}): is it a plain-text port?`
    case "ECONNRESET":
    case "ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE":
      return `it closed the connection during the TLS handshake (${code}): is it a TLS port?`
    default:
      return code === "" ? opensslReason(error) : `${opensslReason(error)} (${code})`
  }
}

/** The options for a TLS connection to `host` over `socket`, checked against `trust`. */
/**
 * One secure context per trust, made at its first use: given `ca`, `tls.connect` would build a new
 * one (and parse the CA file) for every connection — measured at ~0.9 ms of CPU per connect.
 */
const contexts = new WeakMap<Trust, Tls.SecureContext>()
const contextOf = (trust: Trust): Tls.SecureContext => {
  const known = contexts.get(trust)
  if (known !== undefined) return known
  const context = Tls.createSecureContext(trust.ca === undefined ? {} : { ca: trust.ca })
  contexts.set(trust, context)
  return context
}

/**
 * The options for a TLS connection to `host` over `socket`, checked against `trust`; `session`
 * resumes an earlier session with the same peer (an abbreviated handshake, as HAProxy does to its
 * servers by default).
 */
export const clientOptions = (
  socket: Tls.ConnectionOptions["socket"],
  host: string,
  trust: Trust,
  session?: Buffer
): Tls.ConnectionOptions => ({
  socket,
  secureContext: contextOf(trust),
  // SNI carries a host name, never an address (RFC 6066); the certificate is checked against either.
  ...(isIP(host) === 0 ? { servername: host } : {}),
  ...(session === undefined ? {} : { session }),
  host,
  rejectUnauthorized: true
})
