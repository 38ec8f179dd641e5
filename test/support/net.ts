/** Raw loopback I/O for tests that must write bytes no well-behaved client would. */
import { Effect } from "effect"
import * as Net from "node:net"

/**
 * Writes `bytes` to 127.0.0.1:`port` and collects what comes back until the peer closes, `expectLines`
 * lines have arrived, or `waitMs` passes.
 */
export const raw = (port: number, bytes: Buffer | string, options: { waitMs?: number; expectLines?: number } = {}) =>
  Effect.async<{ data: string; closedByServer: boolean }>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port })
    const chunks: Array<Buffer> = []
    const finish = (closedByServer: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed({ data: Buffer.concat(chunks).toString(), closedByServer }))
    }
    const timer = setTimeout(() => finish(false), options.waitMs ?? 3000)
    socket.on("data", (chunk) => {
      chunks.push(chunk)
      const lines = Buffer.concat(chunks).toString().split("\n").length - 1
      if (options.expectLines !== undefined && lines >= options.expectLines) finish(false)
    })
    socket.on("error", () => undefined)
    socket.on("close", () => finish(true))
    socket.write(bytes)
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  })

export const lines = (data: string) =>
  data
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as { _tag: string; message?: string })

/** A TCP listener on 127.0.0.1 and a free port that echoes what it gets (half-close kept), closed with the scope. */
export const echoServer = Effect.acquireRelease(
  Effect.async<Net.Server>((resume) => {
    const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => undefined)
      socket.pipe(socket)
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
)

/** Whether a connection to 127.0.0.1:`port` is refused (nothing listens there any more). */
export const refused = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
    socket.once("error", () => resume(Effect.succeed(true)))
  })
