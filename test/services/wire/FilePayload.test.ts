import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as Crypto from "node:crypto"
import * as Net from "node:net"
import { ConnectionClosed, type PayloadSink } from "../../../src/services/wire/Connection.js"
import { type PayloadFile, sendFile } from "../../../src/services/wire/FilePayload.js"

/** A connected pair on loopback: `sender` is the side the payload is sent on; both closed with the scope. */
const socketPair = Effect.acquireRelease(
  Effect.async<{ readonly sender: Net.Socket; readonly receiver: Net.Socket; readonly server: Net.Server }>(
    (resume) => {
      const server = Net.createServer((sender) => {
        sender.on("error", () => undefined)
        resume(Effect.succeed({ sender, receiver, server }))
      })
      let receiver: Net.Socket
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        receiver = Net.createConnection({ host: "127.0.0.1", port })
        // A sender closed mid-payload resets the connection: expected here.
        receiver.on("error", () => undefined)
      })
    }
  ),
  ({ receiver, sender, server }) =>
    Effect.sync(() => {
      sender.destroy()
      receiver.destroy()
      server.close()
    })
)

const sinkOf = (socket: Net.Socket): PayloadSink => ({
  socket,
  get closed() {
    return socket.destroyed
  },
  payloadSent: 0,
  gone: (what) => new ConnectionClosed({ reason: what })
})

/** A file in memory; `shortBy` bytes fewer than it says (a file truncated while sent); reads counted. */
const memoryFile = (content: Buffer, options: { readonly shortBy?: number; readonly failAt?: number } = {}) => {
  const stats = { reads: 0 }
  const file: PayloadFile = {
    size: content.length,
    read: (into, length, position) => {
      stats.reads++
      if (options.failAt !== undefined && position >= options.failAt) return Promise.reject(new Error("EIO"))
      const end = Math.min(position + length, content.length - (options.shortBy ?? 0))
      const count = Math.max(0, end - position)
      content.copy(into, 0, position, position + count)
      // Resolved later, as a disk read is, so writes and reads interleave.
      return new Promise((resolve) => setImmediate(() => resolve(count)))
    }
  }
  return { file, stats, content }
}

/**
 * Everything `socket` receives until it closes or `size` bytes have come, read with a pause after
 * each chunk: the sender's writes then queue in the socket (not taken by the kernel at once), so a
 * buffer reused too early would show in the bytes.
 */
const receive = (socket: Net.Socket, size: number) =>
  Effect.async<Buffer>((resume) => {
    const chunks: Array<Buffer> = []
    let got = 0
    const done = () => resume(Effect.succeed(Buffer.concat(chunks)))
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      got += chunk.length
      if (got >= size) return done()
      socket.pause()
      setTimeout(() => socket.resume(), 1)
    })
    socket.on("close", done)
  })

describe("sendFile", () => {
  it.scopedLive("sends files of many chunks byte for byte through buffers used again, to a slow reader too", () =>
    Effect.gen(function* () {
      const { sender, receiver } = yield* socketPair
      // Not a multiple of the 256 KB chunk; two downloads at once share the buffer pool.
      const first = memoryFile(Crypto.randomBytes(30 * 256 * 1024 + 12_345))
      const second = memoryFile(Crypto.randomBytes(20 * 256 * 1024 + 7))
      const sink = sinkOf(sender)
      const received = yield* Effect.fork(receive(receiver, first.file.size + second.file.size))
      yield* sendFile(sink, first.file)
      yield* sendFile(sink, second.file)
      const bytes = yield* received.await.pipe(Effect.flatten)
      expect(bytes.equals(Buffer.concat([first.content, second.content]))).toBe(true)
      expect(sink.payloadSent).toBe(first.file.size + second.file.size)
      expect(first.stats.reads).toBe(31)
    })
  )

  it.scopedLive(
    "stops reading the file while the peer does not read (the socket pushes back), and ends when the peer goes",
    () =>
      Effect.gen(function* () {
        const { sender, receiver } = yield* socketPair
        receiver.pause()
        const big = memoryFile(Buffer.alloc(64 * 256 * 1024, 7))
        // A connection that sent other payloads before: the error counts this file's bytes only.
        const sink = sinkOf(sender)
        sink.payloadSent = 1_000_000_000
        const sending = yield* Effect.fork(sendFile(sink, big.file))
        yield* Effect.sleep("300 millis")
        // The kernel's buffers take some chunks (a few MB on loopback); then the sender stops reading.
        const readsWhileStalled = big.stats.reads
        yield* Effect.sleep("300 millis")
        expect(big.stats.reads).toBe(readsWhileStalled)
        expect(readsWhileStalled).toBeLessThan(64)
        expect(sending.unsafePoll()).toBeNull()
        receiver.destroy()
        const exit = yield* sending.await
        expect(Exit.isFailure(exit) && String(exit.cause)).toContain("ConnectionClosed")
        const sent = /closed after (\d+) of (\d+) bytes/.exec(String(Exit.isFailure(exit) && exit.cause))
        expect(Number(sent?.[2])).toBe(big.file.size)
        expect(Number(sent?.[1])).toBeGreaterThan(0)
        expect(Number(sent?.[1])).toBe(sink.payloadSent - 1_000_000_000)
      })
  )

  it.scopedLive("fails with PayloadFailed and closes the connection when the file ends early or cannot be read", () =>
    Effect.gen(function* () {
      for (const options of [{ shortBy: 1000 }, { failAt: 256 * 1024 }]) {
        const { sender } = yield* socketPair
        const { file } = memoryFile(Buffer.alloc(600_000, 1), options)
        const exit = yield* Effect.exit(sendFile(sinkOf(sender), file))
        expect(Exit.isFailure(exit) && String(exit.cause)).toContain("PayloadFailed")
        expect(sender.destroyed).toBe(true)
      }
    })
  )
})
