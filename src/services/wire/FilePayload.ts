/**
 * A file sent as a payload through buffers that are used again. Piping a file's read stream
 * allocates a new 256 KB buffer per chunk, outside V8's heap: 100 MB sent is 100 MB of external
 * memory for the collector to account for, and past its limit V8 runs full collections to free
 * it. In the bundled server (a small heap) that was 3–4 full collections per 100 MB download and
 * 0.55–0.65 of a plain `node:net` pipe's speed. Here a chunk is read into a buffer from a small
 * pool, written, and the buffer goes back to the pool when the socket has taken it (its write
 * callback): no allocation per chunk, so nothing for the collector. The next chunk is read while
 * one is being written, and nothing more is read until the socket drains: memory per download
 * stays at two buffers whatever the reader's pace, as with a pipe.
 */
import { Effect } from "effect"
import { type ConnectionClosed, PayloadFailed, type PayloadSink } from "./Connection.js"

/** A file open for reading, of a size fixed when it was opened. */
export interface PayloadFile {
  readonly size: number
  /** Reads up to `length` bytes at `position` into the start of `into`; the bytes read (0 at the end). */
  readonly read: (into: Buffer, length: number, position: number) => Promise<number>
}

const chunkSize = 256 * 1024
/** Spare buffers kept for the next downloads, at most (2 MB); more in use at once are allocated and let go. */
const spareKept = 8
const spare: Array<Buffer> = []

const takeBuffer = (): Buffer => spare.pop() ?? Buffer.allocUnsafeSlow(chunkSize)

const giveBack = (buffer: Buffer): void => {
  if (spare.length < spareKept) spare.push(buffer)
}

/** Sends exactly `file.size` bytes of `file` on the sink's socket, with its backpressure. */
export const sendFile = (sink: PayloadSink, file: PayloadFile): Effect.Effect<void, ConnectionClosed | PayloadFailed> =>
  Effect.async<void, ConnectionClosed | PayloadFailed>((resume) => {
    const socket = sink.socket
    /** Bytes read from the file so far, and handed to the socket. */
    let position = 0
    let written = 0
    let reading = false
    /** A chunk read and not yet written: the socket is still taking the one before. */
    let ready: { readonly buffer: Buffer; readonly length: number } | undefined = undefined
    let canWrite = true
    let done = false

    const finish = (result: Effect.Effect<void, ConnectionClosed | PayloadFailed>) => {
      if (done) return
      done = true
      socket.off("close", onClose)
      socket.off("drain", onDrain)
      if (ready !== undefined) giveBack(ready.buffer)
      ready = undefined
      resume(result)
    }
    const fail = (reason: string) => {
      socket.destroy()
      finish(Effect.fail(new PayloadFailed({ reason })))
    }
    const onClose = () => finish(Effect.fail(sink.gone(`closed after ${written} of ${file.size} bytes`)))
    const onDrain = () => {
      canWrite = true
      step()
    }
    const step = (): void => {
      if (done) return
      if (ready !== undefined && canWrite) {
        const { buffer, length } = ready
        ready = undefined
        written += length
        sink.payloadSent += length
        // The buffer goes back to the pool only once the socket is done with it.
        canWrite = socket.write(length === buffer.length ? buffer : buffer.subarray(0, length), () => giveBack(buffer))
      }
      if (ready === undefined && !reading && position < file.size) return read()
      if (ready === undefined && !reading && position >= file.size) finish(Effect.void)
    }
    const read = () => {
      reading = true
      const buffer = takeBuffer()
      file.read(buffer, Math.min(buffer.length, file.size - position), position).then(
        (length) => {
          reading = false
          if (done) return giveBack(buffer)
          if (length === 0) {
            giveBack(buffer)
            return fail(`the file ended after ${position} of ${file.size} bytes`)
          }
          position += length
          ready = { buffer, length }
          step()
        },
        (error: unknown) => {
          reading = false
          giveBack(buffer)
          if (!done) fail(error instanceof Error ? error.message : String(error))
        }
      )
    }

    if (sink.closed || socket.destroyed) return finish(Effect.fail(sink.gone("closed before the payload")))
    socket.on("close", onClose)
    socket.on("drain", onDrain)
    step()
    return Effect.sync(() => finish(Effect.void))
  })
