import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, FastCheck, Schema } from "effect"
import { BalancerReply, BalancerRequest, ServerReply, ServerRequest } from "../../../src/domain/Protocol.js"
import { type Frame, FrameDecoder } from "../../../src/services/wire/Frames.js"

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
    [FastCheck.array(FastCheck.uint8Array({ maxLength: 512 }), { maxLength: 30 })],
    ([chunks]) => {
      const decoder = new FrameDecoder(256)
      for (const chunk of chunks) {
        decoder.push(chunk)
        const frames = drain(decoder)
        for (const frame of frames) expect(["Line", "BadLine", "TooLong"]).toContain(frame._tag)
        if (frames.some((frame) => frame._tag === "TooLong")) return
        expect(decoder.buffered).toBeLessThanOrEqual(256)
      }
    }
  )

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
