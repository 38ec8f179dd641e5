/** Command-line option helpers shared by every command: durations, ports, and where things are. */
import { Args, HelpDoc, Options, ValidationError } from "@effect/cli"
import * as Span from "@effect/cli/HelpDoc/Span"
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

/**
 * What one option's (or argument's) value must be, and how its text becomes one: the one place an
 * option's limits live. A bad value is refused with one line built from `says`:
 * `--port must be an integer from 0 to 65535 (got 70000)`.
 */
export interface Rule<A> {
  /** Completes "--port must be …": `an integer from 0 to 65535`. */
  readonly says: string
  /** The value's placeholder in the help: `PORT`, `N`, `DURATION`. */
  readonly placeholder: string
  readonly decode: (text: string) => Option.Option<A>
  /** How a refused value is shown back; by default the text itself (a secret says what is wrong instead). */
  readonly got?: (text: string) => string
}

const shown = (text: string) => (text === "" ? '""' : /[\s"]/.test(text) ? JSON.stringify(text) : text)

/** The one-line refusal, with the option (or argument) as its first, strong span: main.ts renders it as text or JSON. */
export const refusal = (name: string, says: string, got: string): HelpDoc.HelpDoc =>
  HelpDoc.p(Span.spans([Span.strong(name), Span.text(` must be ${says} (got ${got})`)]))

const decodedBy =
  <A>(name: string, rule: Rule<A>) =>
  (text: string): Effect.Effect<A, HelpDoc.HelpDoc> =>
    Option.match(rule.decode(text), {
      onSome: Effect.succeed,
      onNone: () => Effect.fail(refusal(name, rule.says, (rule.got ?? shown)(text)))
    })

/** Checks `text` against `rule` for the option called `name` (`--port`). */
export const checked =
  <A>(name: string, rule: Rule<A>) =>
  (text: string): Effect.Effect<A, ValidationError.ValidationError> =>
    Effect.mapError(decodedBy(name, rule)(text), ValidationError.invalidValue)

export const integer = (min: number, max: number, placeholder = "N"): Rule<number> => ({
  says: `an integer from ${min} to ${max}`,
  placeholder,
  decode: (text) => {
    const value = /^\s*[-+]?\d+\s*$/.test(text) ? Number(text) : NaN
    return Number.isSafeInteger(value) && value >= min && value <= max ? Option.some(value) : Option.none()
  }
})

export const decimal = (min: number, max: number): Rule<number> => ({
  says: `a number from ${min} to ${max}`,
  placeholder: "X",
  decode: (text) => {
    const value = /^\s*[-+]?(\d+\.?\d*|\.\d+)\s*$/.test(text) ? Number(text) : NaN
    return value >= min && value <= max ? Option.some(value) : Option.none()
  }
})

/** `500ms`, `2s`, `5m`, `1h`: how a duration is shown in the help. */
export const durationText = (duration: Duration.Duration) => {
  const ms = Duration.toMillis(duration)
  return ms === 0
    ? "0"
    : ms % 3_600_000 === 0
      ? `${ms / 3_600_000}h`
      : ms % 60_000 === 0
        ? `${ms / 60_000}m`
        : ms % 1000 === 0
          ? `${ms / 1000}s`
          : `${ms}ms`
}

/** A duration from `min` to `max`, written `500ms`, `2s`, `2.5s`, `5m`, `1h` (a bare number is seconds). */
export const durationBetween = (min: Duration.DurationInput, max: Duration.DurationInput): Rule<Duration.Duration> => {
  const low = Duration.decode(min)
  const high = Duration.decode(max)
  return {
    says: `a duration from ${durationText(low)} to ${durationText(high)}, like 500ms, 2s or 5m`,
    placeholder: "DURATION",
    decode: (text) =>
      Option.filter(Either.getRight(Schema.decodeEither(DurationFromText)(text)), (duration) =>
        Duration.between(duration, { minimum: low, maximum: high })
      )
  }
}

export const oneOf = <const A extends string>(choices: ReadonlyArray<A>, placeholder = "NAME"): Rule<A> => ({
  says: `one of ${choices.join(", ")}`,
  placeholder,
  decode: (text) => Option.fromNullable(choices.find((choice) => choice === text))
})

/** A rule from a Schema (its own messages are dropped: `says` is the whole rule). */
export const fromSchema = <A>(
  schema: Schema.Schema<A, string>,
  says: string,
  placeholder: string,
  got?: (text: string) => string
): Rule<A> => ({
  says,
  placeholder,
  decode: (text) => Either.getRight(Schema.decodeEither(schema)(text)),
  ...(got === undefined ? {} : { got })
})

/** An option whose value follows `rule`: refused in one line naming it when it does not. */
export const ruled = <A>(name: string, rule: Rule<A>) =>
  Options.text(name).pipe(Options.withPseudoName(rule.placeholder), Options.mapEffect(checked(`--${name}`, rule)))

/** An argument whose value follows `rule` (`SECONDS`, `NAME`). */
export const ruledArg = <A>(name: string, rule: Rule<A>, description: string) =>
  Args.text({ name }).pipe(Args.mapEffect(decodedBy(name, rule)), Args.withDescription(`${description} [${rule.says}]`))

/** The help line: what the option is for, its rule, and its default (what happens without it). */
const described = (description: string, says: string, fallback: string) =>
  `${description} [default: ${fallback}; ${says}]`

/** An option with a default, shown in the help with its rule. */
export const withDefault = <A>(name: string, rule: Rule<A>, fallback: A, description: string, fallbackText?: string) =>
  ruled(name, rule).pipe(
    Options.withDefault(fallback),
    Options.withDescription(described(description, rule.says, fallbackText ?? String(fallback)))
  )

/** An option that may be left out; `without` says what happens then ("off", "no limit"). */
export const optional = <A>(name: string, rule: Rule<A>, description: string, without: string) =>
  ruled(name, rule).pipe(Options.optional, Options.withDescription(described(description, rule.says, without)))

export const duration = (
  name: string,
  fallback: Duration.DurationInput,
  description: string,
  min: Duration.DurationInput = "10 millis",
  max: Duration.DurationInput = "24 hours"
) => {
  const value = Duration.decode(fallback)
  return withDefault(name, durationBetween(min, max), value, description, durationText(value))
}

export const portRule = integer(0, 65535, "PORT")

/** The most `--max-compute` may be: a day. */
export const maxComputeLimit = 86_400

/**
 * `compute SECONDS`: the client cannot know the server's `--max-compute`, so it refuses what no
 * server takes, in the server's words; a server's own limit comes back from it, in one line.
 */
export const computeSecondsRule: Rule<number> = {
  ...integer(0, maxComputeLimit, "SECONDS"),
  says: `an integer from 0 to the server's --max-compute, at most ${maxComputeLimit}`
}

/** A TCP port; 0 lets the system pick one (the chosen port is printed). */
export const port = (fallback: number, description: string, name = "port") =>
  withDefault(name, portRule, fallback, description)

/** A port that turns a feature on when given (`--proxy-port`, `--admin-port`); 0 picks a free one. */
export const optionalPort = (name: string, description: string) => optional(name, portRule, description, "off")

export const hostRule = fromSchema(Host, "a host name or an IP address (letters, digits and . _ : % -)", "HOST")

export const host = withDefault("host", hostRule, Host.make("127.0.0.1"), "address to listen on")

export const positiveInt = (name: string, fallback: number, max: number, description: string) =>
  withDefault(name, integer(1, max), fallback, description)

/** HAProxy's `rise` and `fall`: answered / failed probes in a row that change a server's state. */
export const rise = (fallback: number) =>
  positiveInt("rise", fallback, 100, "answered probes in a row that make a dead server live")
export const fall = (fallback: number) =>
  positiveInt("fall", fallback, 100, "failed probes in a row (spanning dead-after) that make a live server dead")

/** A file name, read when the command starts (its errors then name the file and say why). */
export const fileRule: Rule<string> = {
  says: "a file name",
  placeholder: "FILE",
  decode: (text) => (text === "" ? Option.none() : Option.some(text))
}

export type TlsListener = "balancer" | "proxy"

/** `balancer,proxy`: which of the balancer's listeners serve TLS. */
export const tlsListenersRule: Rule<ReadonlyArray<TlsListener>> = {
  says: "balancer, proxy, or both separated by a comma",
  placeholder: "LIST",
  decode: (text) => {
    const parts = text
      .split(",")
      .map((part) => part.trim())
      .filter((part) => part !== "")
    const listeners = parts.filter((part): part is TlsListener => part === "balancer" || part === "proxy")
    return parts.length === 0 || listeners.length !== parts.length
      ? Option.none()
      : Option.some([...new Set(listeners)])
  }
}

/** An existing folder (`--files`, `--out`). */
export const folderRule: Rule<string> = {
  says: "an existing folder",
  placeholder: "DIR",
  decode: (text) => {
    try {
      return text !== "" && Fs.statSync(text).isDirectory() ? Option.some(text) : Option.none()
    } catch {
      return Option.none()
    }
  }
}

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

export const endpointRule = fromSchema(EndpointFromString, "host:port, with a port from 1 to 65535", "HOST:PORT")

/** `--balancer host:port`: where the balancer's port is. */
export const balancerAddress = ruled("balancer", endpointRule)

/**
 * `--balancer a:1,b:2` or the flag repeated: every balancer given, in order (a name given twice
 * counts once). Each address is checked on its own, and a bad one is refused as one address is:
 * `--balancer must be host:port, with a port from 1 to 65535 (got x)`.
 */
export const balancerList = Options.text("balancer").pipe(
  Options.withPseudoName("HOST:PORT[,HOST:PORT…]"),
  Options.repeated,
  Options.mapEffect((texts) =>
    Effect.map(
      Effect.forEach(
        texts.flatMap((text) => text.split(",")),
        (part) => checked("--balancer", endpointRule)(part.trim())
      ),
      (addresses) => {
        const seen = new Set<string>()
        return addresses.filter((address) => {
          const name = formatEndpoint(address)
          return seen.has(name) ? false : (seen.add(name), true)
        })
      }
    )
  )
)

/** What the help says of `--balancer`, after what it is for. */
export const balancerListSays = "host:port; several separated by commas, or the flag repeated"

const defaultBalancer = { host: Host.make("127.0.0.1"), port: Port.make(4000) }

/** `--balancer` for commands that need a balancer: 127.0.0.1:4000 unless told. */
export const balancers = (description: string) =>
  balancerList.pipe(
    Options.map((addresses) => (addresses.length === 0 ? [defaultBalancer] : addresses)),
    Options.withDescription(described(description, balancerListSays, "127.0.0.1:4000"))
  )

export const balancer = balancers(
  "the balancer's address; given several, the first that answers (a client starts at a random one)"
)

/** What is wrong with a token, never the token itself: it is a secret. */
const tokenFault = (text: string) =>
  text.length === 0
    ? "an empty value"
    : text.length > 1024
      ? `${text.length} characters`
      : /\p{Cc}/u.test(text)
        ? "a control character"
        : /^\s|\s$/u.test(text)
          ? "a space at one end"
          : "half of a surrogate pair"

export const tokenRule = fromSchema(
  Token,
  "1 to 1024 characters, no control characters, no space at either end",
  "TOKEN",
  tokenFault
)

export const accessLog = Options.boolean("access-log").pipe(
  Options.withDescription(
    "log one line per Locate and per proxied connection: client, server, duration, bytes, outcome [default: off]"
  )
)

export const token = optional(
  "token",
  tokenRule,
  "shared secret guarding Register, SetStrategy and Deregister",
  "none: anyone may register"
)

/** A value refused once the command runs (a rule across options, like `--weights` against `--servers`). */
export class InvalidOption extends Schema.TaggedError<InvalidOption>()("InvalidOption", {
  option: Schema.String,
  rule: Schema.String,
  got: Schema.String
}) {
  override get message(): string {
    return `${this.option} must be ${this.rule} (got ${this.got})`
  }
}

/** A `--token` that no door could ever accept: refused before anything starts. */
export class UnusableToken extends Schema.TaggedError<UnusableToken>()("UnusableToken", { reason: Schema.String }) {
  override get message(): string {
    return `--token must be ${tokenRule.says} (got ${this.reason})`
  }
}

/** The `--token` given, checked against the one token rule (`Token`), so a program never starts with one that cannot work. */
export const checkedToken = (given: Option.Option<string>): Effect.Effect<Option.Option<Token>, UnusableToken> =>
  Option.match(given, {
    onNone: () => Effect.succeed(Option.none()),
    onSome: (text) =>
      Either.match(Schema.decodeEither(Token)(text), {
        onRight: (token) => Effect.succeed(Option.some(token)),
        onLeft: () => Effect.fail(new UnusableToken({ reason: tokenFault(text) }))
      })
  })

export const json = Options.boolean("json").pipe(
  Options.withDescription("print JSON for scripts, errors too (as one JSON object on stderr) [default: off]")
)

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

export const serverRule = fromSchema(
  ServerAddressFromText,
  "host:port or host:port:weight, with a port from 1 to 65535 and a weight from 1 to 1000",
  "HOST:PORT[:WEIGHT]"
)

/** `--log-format`: log lines for people, or one JSON object per line (taken from anywhere on the line by main.ts). */
export const logFormats = ["pretty", "json"] as const
export type LogFormat = (typeof logFormats)[number]
