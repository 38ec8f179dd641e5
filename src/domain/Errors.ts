/**
 * Errors that cross the wire. Each is a `Schema.TaggedError`: a typed failure inside the program and,
 * encoded, the reply a peer gets (`{"_tag":"Busy","message":"..."}`).
 */
import { Schema } from "effect"

/** The request could not be understood or is out of bounds: malformed JSON, unknown tag, bad field. */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  message: Schema.String
}) {}

/** The named file is not served here: unknown, not a plain name, or outside the served folder. */
export class FileNotFound extends Schema.TaggedError<FileNotFound>()("FileNotFound", {
  message: Schema.String
}) {}

/** The balancer has no live server it may hand out. */
export class NoServerAvailable extends Schema.TaggedError<NoServerAvailable>()("NoServerAvailable", {
  message: Schema.String
}) {}

/** A guarded request came without the right token. */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  message: Schema.String
}) {}

/** The process is past its connection limit, or shutting down. */
export class Busy extends Schema.TaggedError<Busy>()("Busy", {
  message: Schema.String
}) {}

/** The named server is not registered with this balancer. */
export class ServerNotFound extends Schema.TaggedError<ServerNotFound>()("ServerNotFound", {
  message: Schema.String
}) {}

/** A server to add is already registered, under that id or at that address: `id` is the one registered. */
export class ServerExists extends Schema.TaggedError<ServerExists>()("ServerExists", {
  message: Schema.String,
  id: Schema.String
}) {}

/**
 * With a shared registry (`--registry`): it is unreachable, so an operator's change is refused rather
 * than made on one balancer alone. Servers' own registrations and load go on, and are shared later.
 */
export class RegistryUnavailable extends Schema.TaggedError<RegistryUnavailable>()("RegistryUnavailable", {
  message: Schema.String
}) {}
