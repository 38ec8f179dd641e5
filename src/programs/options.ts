/** Command-line option helpers shared by every command: durations, ports, and where things are. */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Duration, Effect, Either, Option, ParseResult, Schema } from "effect"
import { Token } from "../domain/Protocol.js"
import { EndpointFromString, formatEndpoint, Host, Port, Weight } from "../domain/Server.js"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** `500ms`, `1s`, `2.5s`, `5m`, `1h` (a bare number is seconds) ⇄ a Duration. */
export const DurationFromText = Schema.transformOrFail(Schema.String, Schema.DurationFromSelf, {
  strict: true,
  decode: (text, _, ast) => {
    const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim())
    const amount = match?.[1]
    const unit = units[match?.[2] ?? "s"]
    return amount === undefined || unit === undefined
      ? ParseResult.fail(new ParseResult.Type(ast, text, `expected a duration like 500ms, 1s or 5m, got "${text}"`))
      : ParseResult.succeed(Duration.millis(Number(amount) * unit))
  },
  encode: (duration) => ParseResult.succeed(`${Duration.toMillis(duration)}ms`)
})

export const duration = (name: string, fallback: Duration.DurationInput, description: string) =>
  Options.text(name).pipe(
    Options.withSchema(DurationFromText),
    Options.withDefault(Duration.decode(fallback)),
    Options.withDescription(description)
  )

/** A TCP port; 0 lets the system pick one (the chosen port is printed). */
export const port = (fallback: number, description: string, name = "port") =>
  Options.integer(name).pipe(
    Options.withSchema(Schema.Int.pipe(Schema.between(0, 65535))),
    Options.withDefault(fallback),
    Options.withDescription(description)
  )

/** A port that turns a feature on when given (`--proxy-port`, `--admin-port`); 0 picks a free one. */
export const optionalPort = (name: string, description: string) =>
  Options.integer(name).pipe(
    Options.withSchema(Schema.Int.pipe(Schema.between(0, 65535))),
    Options.optional,
    Options.withDescription(description)
  )

export const host = Options.text("host").pipe(
  Options.withDefault("127.0.0.1"),
  Options.withDescription("address to listen on")
)

export const positiveInt = (name: string, fallback: number, max: number, description: string) =>
  Options.integer(name).pipe(
    Options.withSchema(Schema.Int.pipe(Schema.between(1, max))),
    Options.withDefault(fallback),
    Options.withDescription(description)
  )

/** HAProxy's `rise` and `fall`: answered / failed probes in a row that change a server's state. */
export const rise = (fallback: number) =>
  positiveInt("rise", fallback, 100, "answered probes in a row that make a dead server live")
export const fall = (fallback: number) =>
  positiveInt("fall", fallback, 100, "failed probes in a row (spanning dead-after) that make a live server dead")

/** The sample folder shipped with effect-lb, found from wherever this module runs (src/ or dist/src/). */
export const sampleFolder = (): Option.Option<string> => {
  let dir = Path.dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5; i++) {
    const candidate = Path.join(dir, "samples")
    if (Fs.existsSync(Path.join(dir, "package.json")) && Fs.existsSync(candidate)) return Option.some(candidate)
    dir = Path.dirname(dir)
  }
  return Option.none()
}

/** Decodes an option's text with `schema`; a bad value is one short sentence, not Schema's whole tree. */
export const decodedWith =
  <A>(name: string, schema: Schema.Schema<A, string>) =>
  (text: string): Effect.Effect<A, ValidationError.ValidationError> =>
    Either.match(Schema.decodeEither(schema)(text), {
      onRight: Effect.succeed,
      onLeft: (error) => {
        const first = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
        return Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--${name}: ${first?.message ?? "invalid value"}`)))
      }
    })

/** `--balancer host:port`: where the balancer's port is. */
export const balancerAddress = Options.text("balancer").pipe(
  Options.mapEffect(decodedWith("balancer", EndpointFromString))
)

export const balancer = balancerAddress.pipe(
  Options.withDefault({ host: Host.make("127.0.0.1"), port: Port.make(4000) }),
  Options.withDescription("the balancer's address, host:port (default 127.0.0.1:4000)")
)

export const token = Options.text("token").pipe(
  Options.optional,
  Options.withDescription(
    "shared secret guarding Register, SetStrategy and Deregister: 1-1024 characters, no control characters, no space at either end"
  )
)

/** A `--token` that no door could ever accept: refused before anything starts. */
export class UnusableToken extends Schema.TaggedError<UnusableToken>()("UnusableToken", { reason: Schema.String }) {
  override get message(): string {
    return `--token: ${this.reason}`
  }
}

/** The `--token` given, checked against the one token rule (`Token`), so a program never starts with one that cannot work. */
export const checkedToken = (given: Option.Option<string>): Effect.Effect<Option.Option<Token>, UnusableToken> =>
  Option.match(given, {
    onNone: () => Effect.succeed(Option.none()),
    onSome: (text) =>
      Either.match(Schema.decodeEither(Token)(text), {
        onRight: (token) => Effect.succeed(Option.some(token)),
        onLeft: (error) =>
          Effect.fail(
            new UnusableToken({ reason: ParseResult.ArrayFormatter.formatErrorSync(error)[0]?.message ?? "invalid" })
          )
      })
  })

export const json = Options.boolean("json").pipe(Options.withDescription("print JSON for scripts"))

const serverPattern = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})(?::(\d{1,4}))?$/

/** `host:port[:weight]` (IPv6 in brackets: `[::1]:4001:2`) ⇄ a server's address and weight. */
export const ServerAddressFromText = Schema.transformOrFail(
  Schema.String,
  Schema.Struct({ host: Host, port: Port, weight: Weight }),
  {
    strict: true,
    decode: (text, _, ast) => {
      const match = serverPattern.exec(text.trim())
      const host = match?.[1] ?? match?.[2]
      return host === undefined || match?.[3] === undefined
        ? ParseResult.fail(new ParseResult.Type(ast, text, `expected host:port or host:port:weight, got "${text}"`))
        : ParseResult.succeed({ host, port: Number(match[3]), weight: Number(match[4] ?? 1) })
    },
    encode: (server) => ParseResult.succeed(`${formatEndpoint(server)}:${server.weight}`)
  }
)
