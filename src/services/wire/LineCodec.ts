/**
 * Messages to and from JSON lines, at the edge: a line becomes a typed message or one short
 * `InvalidRequest` saying why not — whatever the line holds — and a message becomes its line.
 * Both are built once per schema; repeated short lines and re-sent messages are served from caches.
 */
import { Either, ParseResult, Schema } from "effect"
import { InvalidRequest } from "../../domain/Errors.js"

/** The first problem Schema found, in one short line a person can read. */
export const describeParseError = (error: ParseResult.ParseError): string => {
  let issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>
  try {
    issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  } catch {
    return "invalid message"
  }
  const first = issues[0]
  if (first === undefined) return "invalid message"
  const where = first.path.length > 0 ? `${first.path.join(".")}: ` : ""
  const text = `${where}${first.message}`
  return text.length > 200 ? `${text.slice(0, 197)}...` : text
}

const tagOf = (value: unknown): string | undefined =>
  typeof value === "object" && value !== null && "_tag" in value && typeof value._tag === "string"
    ? value._tag
    : undefined

type Decoder<A> = (line: string) => Either.Either<A, InvalidRequest>

/** Parsers are built once per schema, not once per line: the Locate path reads a line per request. */
const decoders = new WeakMap<object, Decoder<unknown>>()
const encoders = new WeakMap<object, (message: unknown) => string>()

/** Turns one JSON line into a message of `schema`, or says in one line why it is not one. */
export const lineDecoder = <A, I>(schema: Schema.Schema<A, I>): Decoder<A> => {
  const cached = decoders.get(schema)
  if (cached !== undefined) return cached as Decoder<A>
  const decode = Schema.decodeUnknownEither(schema)
  // Most lines on a busy port are the same few short requests (`{"_tag":"Locate"}`, `{"_tag":"Ping"}`):
  // their decoded, immutable values are kept, so a repeat costs a map lookup instead of a parse.
  const recent = new Map<string, Either.Either<A, InvalidRequest>>()
  const decoder: Decoder<A> = (line) => {
    const known = recent.get(line)
    if (known !== undefined) return known
    const result = parse(line)
    if (Either.isRight(result) && line.length <= 256) {
      if (recent.size >= 256) recent.clear()
      recent.set(line, result)
    }
    return result
  }
  const parse: Decoder<A> = (line) => {
    let json: unknown
    try {
      json = JSON.parse(line)
    } catch {
      return Either.left(new InvalidRequest({ message: "malformed JSON" }))
    }
    const tag = tagOf(json)
    if (tag === undefined) return Either.left(new InvalidRequest({ message: "expected a JSON object with a _tag" }))
    try {
      return Either.mapLeft(
        decode(json),
        (error) => new InvalidRequest({ message: `${tag}: ${describeParseError(error)}` })
      )
    } catch {
      // A value hostile enough to break the decoder or its error message (say, nesting thousands
      // deep) is still only an invalid request: it must never take the process down.
      return Either.left(new InvalidRequest({ message: `${tag}: invalid message` }))
    }
  }
  decoders.set(schema, decoder as Decoder<unknown>)
  return decoder
}

/** One message of `schema` as a JSON line (without its newline), `_tag` first as PROTOCOL.md writes it. */
export const lineEncoder = <A, I>(schema: Schema.Schema<A, I>): ((message: A) => string) => {
  const cached = encoders.get(schema)
  if (cached !== undefined) return cached as (message: A) => string
  const encode = Schema.encodeSync(schema)
  // Messages are immutable: one sent again (the same `Located` for the same server) is not re-encoded.
  const sent = new WeakMap<object, string>()
  const encoder = (message: A) => {
    const known = typeof message === "object" && message !== null ? sent.get(message) : undefined
    if (known !== undefined) return known
    const line = serialize(message)
    if (typeof message === "object" && message !== null) sent.set(message, line)
    return line
  }
  const serialize = (message: A) => {
    const encoded = encode(message)
    const tagged =
      typeof encoded === "object" && encoded !== null && "_tag" in encoded
        ? Object.assign({ _tag: encoded._tag }, encoded)
        : encoded
    return JSON.stringify(tagged)
  }
  encoders.set(schema, encoder as (message: unknown) => string)
  return encoder
}
