/**
 * `effect-lb balancer --config FILE`: the balancer's settings in a YAML (or JSON) file. Every value is
 * checked by the same rule as its flag (options.ts), through `Schema`; a bad file is refused whole,
 * in one line naming the key, the rule and the value, and an unknown key is refused too.
 */
import { Effect, Either, Option, ParseResult, Schema } from "effect"
import * as Fs from "node:fs"
import { parseDocument } from "yaml"
import { describeFileError } from "../services/wire/Tls.js"
import * as RedisStore from "../services/balancer/shared/RedisStore.js"
import { names } from "../services/balancer/strategies/Catalog.js"
import * as Path from "node:path"
import {
  durationBetween,
  fileRule,
  hostRule,
  integer,
  oneOf,
  portRule,
  type Rule,
  serverRule,
  tlsListenersRule,
  tokenRule
} from "./options.js"

/** `--registry`: a Redis URL, never with a password in it (a refused one is not echoed: why it is refused is). */
const registryRule: Rule<RedisStore.RegistryTarget> = {
  says: `redis://HOST[:PORT][/DB] or rediss://…, without a password (set ${RedisStore.passwordVariable})`,
  placeholder: "URL",
  decode: (text) => Either.getRight(RedisStore.parseRegistryUrl(text)),
  got: (text) => Either.match(RedisStore.parseRegistryUrl(text), { onLeft: (why) => why, onRight: () => text })
}

/** `--registry-namespace`, `--balancer-id`. */
const clusterNameRule: Rule<string> = {
  says: "1 to 128 letters, digits or ._:[]-",
  placeholder: "NAME",
  decode: (text) => (/^[A-Za-z0-9._:[\]-]{1,128}$/.test(text) ? Option.some(text) : Option.none())
}

/** The balancer's rules, each shared by its flag and its key in the file. */
export const rules = {
  host: hostRule,
  port: portRule,
  strategy: oneOf(names),
  server: serverRule,
  health: oneOf(["ping", "tcp"], "KIND"),
  probeInterval: durationBetween("10 millis", "1 hour"),
  deadAfter: durationBetween("10 millis", "1 hour"),
  rise: integer(1, 100),
  fall: integer(1, 100),
  maxConnections: integer(1, 1_000_000),
  connectTimeout: durationBetween("10 millis", "10 minutes"),
  proxyIdleTimeout: durationBetween("100 millis", "24 hours"),
  drainTimeout: durationBetween(0, "1 hour"),
  idleTimeout: durationBetween("100 millis", "24 hours"),
  maxServers: integer(1, 1_000_000),
  removeDeadAfter: durationBetween("1 second", "168 hours"),
  slowStart: durationBetween(0, "1 hour"),
  ejectAfter: integer(0, 1000),
  ejectTime: durationBetween("100 millis", "1 hour"),
  maxEjectedPercent: integer(0, 100),
  sendProxy: oneOf(["v1", "v2", "off"], "VERSION"),
  tlsFile: fileRule,
  tlsListeners: tlsListenersRule,
  token: tokenRule,
  registry: registryRule,
  registryNamespace: clusterNameRule,
  balancerId: clusterNameRule
} satisfies Record<string, Rule<unknown>>

/** A file's whole text, at most this long: a settings file is small. */
const maxBytes = 1024 * 1024

const shownValue = (value: unknown): string => {
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value))
  const quoted = text === "" ? '""' : /[\s"]/.test(text) && typeof value === "string" ? JSON.stringify(text) : text
  return quoted.length > 80 ? `${quoted.slice(0, 77)}...` : quoted
}

/** A key whose value follows `rule`: a string, or a number or boolean read as its text (`port: 4000`). */
const ruled = <A>(rule: Rule<A>) =>
  Schema.transformOrFail(
    Schema.Unknown,
    Schema.declare((_: unknown): _ is A => true),
    {
      strict: true,
      decode: (value, _, ast) => {
        const text =
          typeof value === "string"
            ? value
            : typeof value === "number" || typeof value === "boolean"
              ? String(value)
              : undefined
        const decoded = text === undefined ? Option.none<A>() : rule.decode(text)
        const got = text === undefined ? shownValue(value) : rule.got === undefined ? shownValue(value) : rule.got(text)
        return Option.match(decoded, {
          onSome: (a) => ParseResult.succeed(a),
          onNone: () => ParseResult.fail(new ParseResult.Type(ast, value, `must be ${rule.says} (got ${got})`))
        })
      },
      encode: (a) => ParseResult.succeed(a)
    }
  )

const yesNo = Schema.transformOrFail(Schema.Unknown, Schema.Boolean, {
  strict: true,
  decode: (value, _, ast) =>
    typeof value === "boolean"
      ? ParseResult.succeed(value)
      : ParseResult.fail(new ParseResult.Type(ast, value, `must be true or false (got ${shownValue(value)})`)),
  encode: ParseResult.succeed
})

/** `token: SECRET`, or `token: { env: NAME }`: the secret is in the environment variable NAME. */
const tokenValue = (env: Readonly<Record<string, string | undefined>>) =>
  Schema.transformOrFail(Schema.Unknown, Schema.String, {
    strict: true,
    decode: (value, options, ast) => {
      if (typeof value === "object" && value !== null && !Array.isArray(value)) {
        const keys = Object.keys(value)
        const name = "env" in value ? value.env : undefined
        if (keys.length !== 1 || typeof name !== "string")
          return ParseResult.fail(
            new ParseResult.Type(ast, value, `must be the token, or { env: NAME } (got ${shownValue(value)})`)
          )
        const secret = env[name]
        if (secret === undefined)
          return ParseResult.fail(
            new ParseResult.Type(ast, value, `must name a set environment variable (got env ${name}, which is not set)`)
          )
        return ParseResult.decodeUnknown(ruled(rules.token))(secret, options)
      }
      return ParseResult.decodeUnknown(ruled(rules.token))(value, options)
    },
    encode: ParseResult.succeed
  })

const optional = <A, I>(schema: Schema.Schema<A, I>) => Schema.optionalWith(schema, { exact: true })

const health = Schema.Struct({
  check: optional(ruled(rules.health)),
  interval: optional(ruled(rules.probeInterval)),
  "dead-after": optional(ruled(rules.deadAfter)),
  rise: optional(ruled(rules.rise)),
  fall: optional(ruled(rules.fall))
})

const proxy = Schema.Struct({
  port: optional(ruled(rules.port)),
  "max-connections": optional(ruled(rules.maxConnections)),
  "connect-timeout": optional(ruled(rules.connectTimeout)),
  "idle-timeout": optional(ruled(rules.proxyIdleTimeout)),
  "drain-timeout": optional(ruled(rules.drainTimeout)),
  "send-proxy": optional(ruled(rules.sendProxy)),
  "accept-proxy": optional(yesNo)
})

const passiveHealth = Schema.Struct({
  "eject-after": optional(ruled(rules.ejectAfter)),
  "eject-time": optional(ruled(rules.ejectTime)),
  "max-ejected-percent": optional(ruled(rules.maxEjectedPercent))
})

const admin = Schema.Struct({
  host: optional(ruled(rules.host)),
  port: optional(ruled(rules.port))
})

/** `[balancer, proxy]` as YAML writes a list, or `balancer,proxy` as the flag does. */
const listeners = Schema.transformOrFail(Schema.Unknown, Schema.Unknown, {
  strict: true,
  decode: (value) =>
    ParseResult.succeed(
      Array.isArray(value) && value.every((item) => typeof item === "string") ? value.join(",") : value
    ),
  encode: ParseResult.succeed
}).pipe(Schema.compose(ruled(rules.tlsListeners)))

/** TLS: the certificate, where it is served, and TLS to the servers. File names are relative to the file's folder. */
const tls = Schema.Struct({
  cert: optional(ruled(rules.tlsFile)),
  key: optional(ruled(rules.tlsFile)),
  listeners: optional(listeners),
  backend: optional(yesNo),
  "backend-ca": optional(ruled(rules.tlsFile))
})

/** The shared registry: where it is, the cluster's namespace in it, this balancer's id. */
const registry = Schema.Struct({
  url: optional(ruled(rules.registry)),
  namespace: optional(ruled(rules.registryNamespace)),
  "balancer-id": optional(ruled(rules.balancerId))
})

const configSchema = (env: Readonly<Record<string, string | undefined>>) =>
  Schema.Struct({
    host: optional(ruled(rules.host)),
    port: optional(ruled(rules.port)),
    strategy: optional(ruled(rules.strategy)),
    servers: optional(Schema.Array(ruled(rules.server))),
    health: optional(health),
    "passive-health": optional(passiveHealth),
    "slow-start": optional(ruled(rules.slowStart)),
    proxy: optional(proxy),
    admin: optional(admin),
    tls: optional(tls),
    registry: optional(registry),
    "idle-timeout": optional(ruled(rules.idleTimeout)),
    "max-servers": optional(ruled(rules.maxServers)),
    "remove-dead-after": optional(ruled(rules.removeDeadAfter)),
    "access-log": optional(yesNo),
    token: optional(tokenValue(env))
  })

/** The sections of the file and the keys each takes (for an unknown key's refusal). */
const sections: Record<string, ReadonlyArray<string>> = {
  "": Object.keys(configSchema({}).fields),
  health: Object.keys(health.fields),
  "passive-health": Object.keys(passiveHealth.fields),
  proxy: Object.keys(proxy.fields),
  admin: Object.keys(admin.fields),
  tls: Object.keys(tls.fields),
  registry: Object.keys(registry.fields)
}

/** A settings file as read: only what it says (flags and defaults fill the rest). */
export type ConfigFile = ReturnType<typeof configSchema>["Type"]

/** A settings file refused: `effect-lb.yaml: health.dead-after must be … (got 0)`. */
export class ConfigRefused extends Schema.TaggedError<ConfigRefused>()("ConfigRefused", {
  file: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.file}: ${this.reason}`
  }
}

const keyPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (text, key) => (typeof key === "number" ? `${text}[${key}]` : text === "" ? String(key) : `${text}.${String(key)}`),
    ""
  )

const valueAt = (value: unknown, path: ReadonlyArray<PropertyKey>): unknown =>
  path.reduce<unknown>(
    (inner, key) =>
      typeof inner === "object" && inner !== null ? (inner as Record<PropertyKey, unknown>)[key] : undefined,
    value
  )

/** The first problem Schema found, as the one line a person reads. */
const described = (error: ParseResult.ParseError, value: unknown): string => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  if (issue === undefined) return "is not a valid settings file"
  const key = keyPath(issue.path)
  if (issue._tag === "Unexpected") {
    const parent = keyPath(issue.path.slice(0, -1))
    const known = sections[parent] ?? []
    return `${key} is not a known key${parent === "" ? "" : ` in ${parent}`} (keys: ${known.join(", ")})`
  }
  if (issue.message.startsWith("must ")) return `${key} ${issue.message}`
  const section = sections[key]
  if (section !== undefined)
    return `${key === "" ? "the file" : key} must be a map of keys like ${section.slice(0, 3).join(", ")} (got ${shownValue(valueAt(value, issue.path))})`
  if (key === "servers")
    return `servers must be a list of host:port[:weight] (got ${shownValue(valueAt(value, issue.path))})`
  return `${key} ${issue.message}`
}

/** Checks a parsed document (`env` resolves `{ env: NAME }`); `file` names it in the refusal. */
export const decodeConfig = (
  file: string,
  value: unknown,
  env: Readonly<Record<string, string | undefined>>
): Either.Either<ConfigFile, ConfigRefused> =>
  Either.mapLeft(
    Schema.decodeUnknownEither(configSchema(env), { onExcessProperty: "error", errors: "first" })(value ?? {}),
    (error) => new ConfigRefused({ file, reason: described(error, value) })
  ).pipe(Either.flatMap((config) => pairedCertificate(file, config)))

/** `tls.cert` and `tls.key` go together: one without the other could never serve. */
const pairedCertificate = (file: string, config: ConfigFile): Either.Either<ConfigFile, ConfigRefused> => {
  const cert = config.tls?.cert
  const key = config.tls?.key
  if ((cert === undefined) === (key === undefined)) return Either.right(config)
  const [missing, with_] = cert === undefined ? ["tls.cert", "tls.key"] : ["tls.key", "tls.cert"]
  return Either.left(new ConfigRefused({ file, reason: `${missing} must be given with ${with_} (got none)` }))
}

/** Parses YAML (JSON is YAML too); a syntax error names its line and column. */
export const parseConfig = (file: string, text: string): Either.Either<unknown, ConfigRefused> => {
  const document = parseDocument(text, { uniqueKeys: true })
  const error = document.errors[0]
  if (error !== undefined) {
    const where = error.linePos === undefined ? "" : ` at line ${error.linePos[0].line}, column ${error.linePos[0].col}`
    const what = (error.message.split("\n")[0] ?? "").replace(/ at line \d+, column \d+:?$/, "")
    return Either.left(new ConfigRefused({ file, reason: `not valid YAML or JSON${where}: ${what}` }))
  }
  return Either.try({
    try: () => document.toJS({ maxAliasCount: 100 }) as unknown,
    catch: (cause) => new ConfigRefused({ file, reason: `cannot be read: ${String(cause)}` })
  })
}

const readText = (file: string) =>
  Effect.try({
    try: () => {
      const size = Fs.statSync(file).size
      if (size > maxBytes) throw new Error(`${size} bytes, more than ${maxBytes}`)
      return Fs.readFileSync(file, "utf8")
    },
    catch: (cause) => new ConfigRefused({ file, reason: `cannot be read: ${describeFileError(cause)}` })
  })

/** Reads, parses and checks a settings file, with `process.env` for `{ env: NAME }`. */
export const loadConfig = (file: string): Effect.Effect<ConfigFile, ConfigRefused> =>
  readText(file).pipe(
    Effect.flatMap((text) => parseConfig(file, text)),
    Effect.flatMap((value) => decodeConfig(file, value, process.env)),
    Effect.map((config) => withFilesFrom(Path.dirname(file), config))
  )

/** The TLS file names of `config`, relative ones taken from `folder` (the settings file's), as nginx does. */
const withFilesFrom = (folder: string, config: ConfigFile): ConfigFile => {
  const tls = config.tls
  if (tls === undefined) return config
  const resolve = (file: string | undefined) => (file === undefined ? undefined : Path.resolve(folder, file))
  const cert = resolve(tls.cert)
  const key = resolve(tls.key)
  const ca = resolve(tls["backend-ca"])
  return {
    ...config,
    tls: {
      ...tls,
      ...(cert === undefined ? {} : { cert }),
      ...(key === undefined ? {} : { key }),
      ...(ca === undefined ? {} : { "backend-ca": ca })
    }
  }
}
