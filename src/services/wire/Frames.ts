/**
 * NDJSON framing as a pure, synchronous state machine: bytes in, lines (or raw payload bytes) out.
 * No I/O and no Effect here, so it can be property-tested on any split of any byte stream, and the
 * socket code above it stays a thin adapter.
 */

/** What the decoder can hand out next. */
export type Frame =
  /** A complete line, without its `\n` (a trailing `\r` is dropped too). */
  | { readonly _tag: "Line"; readonly text: string }
  /** A complete line that is not valid UTF-8: the framing is intact, the line is not. */
  | { readonly _tag: "BadLine"; readonly reason: string }
  /** More than `maxLine` bytes without a `\n`: the stream cannot be framed any further. */
  | { readonly _tag: "TooLong"; readonly limit: number }

export const defaultMaxLine = 64 * 1024

/** Bytes a reader buffers ahead of whoever consumes its frames before it pauses the socket. */
export const readAhead = 256 * 1024

const newline = 0x0a
const carriageReturn = 0x0d
const empty = Buffer.alloc(0)
/** Stateless as used (whole lines, no streaming), so one serves every decoder. */
const utf8 = new TextDecoder("utf-8", { fatal: true })

/**
 * A TLS handshake's first bytes (a handshake record, 22, of TLS major version 3): a client speaking
 * TLS to a plain-text port. Said at once, as a bad line, rather than waited on for a newline that
 * may never come; the client then reads a line where it expected TLS, and says the port is not TLS.
 */
const tlsRecord = 0x16
const tlsMajor = 0x03
export const tlsOnPlainPort = "a TLS handshake: this port speaks plain text, not TLS"

/**
 * The short ASCII lines seen last, by a hash of their bytes: most lines on a busy port are the same
 * few requests (`{"_tag":"Locate"}`), and one seen before is handed out again — the same frame, the
 * same string — without reading it out of the buffer; being the same string, its hash is known, so
 * the decoder's cache (LineCodec) finds it at once too. Bounded: at most `internedLines` lines of at
 * most `internedLength` bytes, forgotten all at once when full (hostile lines only churn it).
 */
const internedLength = 64
const internedLines = 256
const interned = new Map<number, { readonly bytes: Buffer; readonly frame: Frame }>()

/** The frame of the first `length` bytes of `bytes` (at most `internedLength`), from the recent lines, or `undefined` when not ASCII. */
const recentLine = (bytes: Buffer, length: number): Frame | undefined => {
  let hash = length
  for (let i = 0; i < length; i++) {
    const byte = bytes[i] ?? 0x80
    if (byte >= 0x80) return undefined
    hash = (Math.imul(hash, 31) + byte) | 0
  }
  const known = interned.get(hash)
  if (known !== undefined && sameBytes(known.bytes, bytes, length)) return known.frame
  const frame: Frame = { _tag: "Line", text: bytes.toString("latin1", 0, length) }
  if (interned.size >= internedLines) interned.clear()
  // A copy: the socket's chunk (and the slab under it) must not be held.
  interned.set(hash, { bytes: Buffer.from(bytes.subarray(0, length)), frame })
  return frame
}

const sameBytes = (known: Buffer, bytes: Buffer, length: number): boolean => {
  if (known.length !== length) return false
  for (let i = 0; i < length; i++) if (known[i] !== bytes[i]) return false
  return true
}

/** The first `length` bytes of `bytes` are few (at most 256) and all ASCII. */
const shortAscii = (bytes: Buffer, length: number): boolean => {
  if (length > 256) return false
  for (let i = 0; i < length; i++) if ((bytes[i] ?? 0x80) >= 0x80) return false
  return true
}

export class FrameDecoder {
  private pending: Buffer = empty
  /** Bytes of `pending` already known to hold no newline, so they are never scanned twice. */
  private scanned = 0
  /** Nothing has been taken yet: the stream's first bytes are still to be looked at. */
  private fresh = true

  constructor(readonly maxLine: number = defaultMaxLine) {}

  /** How many bytes wait to be taken. */
  get buffered(): number {
    return this.pending.length
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)
    this.pending = this.pending.length === 0 ? bytes : Buffer.concat([this.pending, bytes])
  }

  /** The next frame, or `undefined` when more bytes are needed. */
  nextLine(): Frame | undefined {
    if (this.fresh && this.pending.length >= 2) {
      this.fresh = false
      if (this.pending[0] === tlsRecord && this.pending[1] === tlsMajor) {
        this.pending = empty
        this.scanned = 0
        return { _tag: "BadLine", reason: tlsOnPlainPort }
      }
    }
    const end = this.pending.indexOf(newline, this.scanned)
    if (end < 0) {
      this.scanned = this.pending.length
      return this.pending.length > this.maxLine ? { _tag: "TooLong", limit: this.maxLine } : undefined
    }
    if (end > this.maxLine) return { _tag: "TooLong", limit: this.maxLine }
    this.fresh = false
    const pending = this.pending
    const stop = end > 0 && pending[end - 1] === carriageReturn ? end - 1 : end
    this.pending = end + 1 === pending.length ? empty : pending.subarray(end + 1)
    this.scanned = 0
    if (stop <= internedLength) {
      const known = recentLine(pending, stop)
      if (known !== undefined) return known
    }
    // A short ASCII line is read straight out of the buffer: no view of it to make, nothing to validate.
    if (shortAscii(pending, stop)) return { _tag: "Line", text: pending.toString("latin1", 0, stop) }
    try {
      return { _tag: "Line", text: utf8.decode(pending.subarray(0, stop)) }
    } catch {
      return { _tag: "BadLine", reason: "the line is not valid UTF-8" }
    }
  }

  /** Up to `max` raw bytes (a payload after a `FileHeader`), or `undefined` when none are buffered. */
  takeBytes(max: number): Buffer | undefined {
    if (this.pending.length === 0 || max <= 0) return undefined
    this.fresh = false
    const taken = this.pending.length <= max ? this.pending : this.pending.subarray(0, max)
    this.pending = this.pending.length <= max ? empty : this.pending.subarray(max)
    this.scanned = 0
    return taken
  }
}
