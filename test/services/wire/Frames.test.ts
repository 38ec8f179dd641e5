import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, FastCheck, Schema } from "effect"
import { BalancerReply, BalancerRequest, ServerReply, ServerRequest } from "../../../src/domain/Protocol.js"
import { type Frame, FrameDecoder, tlsOnPlainPort } from "../../../src/services/wire/Frames.js"

const AnyMessage = Schema.Union(ServerRequest, ServerReply, BalancerRequest, BalancerReply)
const encodeLine = Schema.encodeSync(Schema.parseJson(AnyMessage))

/** Splits `bytes` at the given cut points (any order, any repeats). */
const split = (bytes: Buffer, cuts: ReadonlyArray<number>): Array<Buffer> => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Buffer> = []
  let from = 0
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.subarray(from, point))
    from = point
  }
  return chunks
}

const drain = (decoder: FrameDecoder): Array<Frame> => {
  const frames: Array<Frame> = []
  for (let frame = decoder.nextLine(); frame !== undefined; frame = decoder.nextLine()) {
    frames.push(frame)
    if (frame._tag === "TooLong") break
  }
  return frames
}

/**
 * Random bytes: some chunks plain noise (a `\n` one byte in 256, so lines outgrow the limit), some
 * with ASCII, `\n` and `\r\n` common enough that lines end before it, valid UTF-8 or not.
 */
const randomChunk = FastCheck.oneof(
  FastCheck.uint8Array({ maxLength: 512, size: "medium" }),
  FastCheck.array(
    FastCheck.oneof(
      { arbitrary: FastCheck.integer({ min: 0, max: 255 }).map((byte) => [byte]), weight: 10 },
      { arbitrary: FastCheck.integer({ min: 0x20, max: 0x7e }).map((byte) => [byte]), weight: 10 },
      { arbitrary: FastCheck.constantFrom([0x0a], [0x0d, 0x0a]), weight: 1 }
    ),
    { maxLength: 256, size: "medium" }
  ).map((tokens) => Uint8Array.from(tokens.flat()))
)

const strictUtf8 = new TextDecoder("utf-8", { fatal: true })

/**
 * What a decoder with `limit` must hand out for `chunks`, drained after each: the model, written
 * the slow and obvious way — every complete line (its `\r\n` or `\n` taken off) as a `Line`, or a
 * `BadLine` when it is not UTF-8; `TooLong`, and nothing after, once a line outgrows the limit.
 */
const expectedFrames = (all: ReadonlyArray<Uint8Array>, limit: number): Array<Frame> => {
  const frames: Array<Frame> = []
  let pending = Buffer.alloc(0)
  let chunks = all
  // A stream that starts as a TLS handshake does: one BadLine, and what had arrived by then dropped.
  const stream = Buffer.concat(all)
  if (stream[0] === 0x16 && stream[1] === 0x03) {
    let seen = 0
    const upTo = all.findIndex((chunk) => (seen += chunk.length) >= 2)
    frames.push({ _tag: "BadLine", reason: tlsOnPlainPort })
    chunks = all.slice(upTo + 1)
  }
  for (const chunk of chunks) {
    pending = Buffer.concat([pending, chunk])
    for (let end = pending.indexOf(0x0a); end >= 0; end = pending.indexOf(0x0a)) {
      if (end > limit) return [...frames, { _tag: "TooLong", limit }]
      const line = pending.subarray(0, pending[end - 1] === 0x0d ? end - 1 : end)
      pending = pending.subarray(end + 1)
      try {
        frames.push({ _tag: "Line", text: strictUtf8.decode(line) })
      } catch {
        frames.push({ _tag: "BadLine", reason: "the line is not valid UTF-8" })
      }
    }
    if (pending.length > limit) return [...frames, { _tag: "TooLong", limit }]
  }
  return frames
}

describe("FrameDecoder", () => {
  it.prop(
    "any split of a valid byte stream decodes to the same messages",
    [
      FastCheck.array(Arbitrary.make(AnyMessage), { maxLength: 20 }),
      FastCheck.array(FastCheck.nat(), { maxLength: 40 })
    ],
    ([messages, cuts]) => {
      const lines = messages.map((message) => encodeLine(message))
      const bytes = Buffer.from(lines.map((line) => line + "\n").join(""), "utf8")
      const decoder = new FrameDecoder()
      const frames: Array<Frame> = []
      for (const chunk of split(bytes, cuts)) {
        decoder.push(chunk)
        frames.push(...drain(decoder))
      }
      expect(frames).toEqual(lines.map((text) => ({ _tag: "Line", text })))
      expect(decoder.buffered).toBe(0)
    }
  )

  it.prop(
    "random bytes never crash the decoder, and never buffer past the limit",
    [FastCheck.array(randomChunk, { maxLength: 30 })],
    ([chunks]) => {
      const decoder = new FrameDecoder(256)
      const frames: Array<Frame> = []
      for (const chunk of chunks) {
        decoder.push(chunk)
        frames.push(...drain(decoder))
        if (frames.some((frame) => frame._tag === "TooLong")) break
        expect(decoder.buffered).toBeLessThanOrEqual(256)
      }
      // Not just "some frame": exactly the frames the bytes hold, line by line.
      expect(frames).toEqual(expectedFrames(chunks, 256))
    }
  )

  it.prop(
    "short lines seen before (handed out from the recent lines) come out as sent, colliding hashes included",
    [FastCheck.array(FastCheck.stringMatching(/^[AaBb]{0,3}$/), { minLength: 1, maxLength: 200 })],
    ([lines]) => {
      // Two letters, at most three: every line repeats, and the hash is easy to collide ("Aa", "BB").
      const decoder = new FrameDecoder(256)
      decoder.push(Buffer.from(lines.map((line) => `${line}\n`).join("")))
      expect(drain(decoder)).toEqual(lines.map((text) => ({ _tag: "Line", text })))
    }
  )

  it("tells apart two short lines whose hashes collide", () => {
    const decoder = new FrameDecoder(256)
    decoder.push(Buffer.from("Aa\nBB\nAa\nBB\n"))
    expect(drain(decoder).map((frame) => (frame._tag === "Line" ? frame.text : frame._tag))).toEqual([
      "Aa",
      "BB",
      "Aa",
      "BB"
    ])
  })

  it("says at once that a stream starting as a TLS handshake is not plain text, then frames what follows", () => {
    const decoder = new FrameDecoder()
    decoder.push(Buffer.from([0x16]))
    expect(decoder.nextLine()).toBeUndefined()
    decoder.push(Buffer.from([0x03, 0x01, 0x00, 0xc8, 0x01]))
    expect(decoder.nextLine()).toEqual({ _tag: "BadLine", reason: tlsOnPlainPort })
    decoder.push(Buffer.from('{"_tag":"Ping"}\n'))
    expect(decoder.nextLine()).toEqual({ _tag: "Line", text: '{"_tag":"Ping"}' })
    // Only the stream's first bytes are looked at: the same bytes later are a line like any other.
    const later = new FrameDecoder()
    later.push(Buffer.from("\n\u0016\u0003\n"))
    expect(later.nextLine()).toEqual({ _tag: "Line", text: "" })
    expect(later.nextLine()).toEqual({ _tag: "Line", text: "\u0016\u0003" })
  })

  it("keeps multi-byte characters split across chunks intact", () => {
    const bytes = Buffer.from('{"name":"żółw🐢.txt"}\n', "utf8")
    const decoder = new FrameDecoder()
    for (const byte of bytes) decoder.push(Buffer.from([byte]))
    expect(decoder.nextLine()).toEqual({ _tag: "Line", text: '{"name":"żółw🐢.txt"}' })
  })

  it("reports invalid UTF-8 per line and carries on with the next", () => {
    const decoder = new FrameDecoder()
    decoder.push(Buffer.from([0xff, 0xfe, 0x0a]))
    decoder.push(Buffer.from('{"_tag":"Ping"}\r\n'))
    expect(decoder.nextLine()?._tag).toBe("BadLine")
    expect(decoder.nextLine()).toEqual({ _tag: "Line", text: '{"_tag":"Ping"}' })
  })

  it("refuses a line longer than the limit, with or without its newline", () => {
    const open = new FrameDecoder(10)
    open.push(Buffer.from("x".repeat(11)))
    expect(open.nextLine()).toEqual({ _tag: "TooLong", limit: 10 })
    const closed = new FrameDecoder(10)
    closed.push(Buffer.from("x".repeat(11) + "\n"))
    expect(closed.nextLine()).toEqual({ _tag: "TooLong", limit: 10 })
    const exact = new FrameDecoder(10)
    exact.push(Buffer.from("x".repeat(10) + "\n"))
    expect(exact.nextLine()).toEqual({ _tag: "Line", text: "x".repeat(10) })
  })

  it("hands out raw payload bytes and then lines again", () => {
    const decoder = new FrameDecoder()
    decoder.push(Buffer.from('{"_tag":"FileHeader","name":"a","size":5}\nhel'))
    expect(decoder.nextLine()?._tag).toBe("Line")
    expect(decoder.takeBytes(5)?.toString()).toBe("hel")
    decoder.push(Buffer.from('lo{"_tag":"Pong"}\n'))
    expect(decoder.takeBytes(2)?.toString()).toBe("lo")
    expect(decoder.nextLine()).toEqual({ _tag: "Line", text: '{"_tag":"Pong"}' })
  })
})
