/** Starts a backend server for a test, over whichever Wire the test provides. */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer, Option, Stream } from "effect"
import {
  type ServerReply,
  ServerReply as ServerReplySchema,
  type ServerRequest,
  ServerRequest as ServerRequestSchema
} from "../../src/domain/Protocol.js"
import type { Connection } from "../../src/services/wire/Connection.js"
import * as FileServer from "../../src/services/server/FileServer.js"
import * as FileStore from "../../src/services/server/FileStore.js"
import { Wire } from "../../src/services/wire/Wire.js"

export const startServer = (folder: string, overrides: Partial<FileServer.FileServerConfig> = {}) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(
      FileServer.layer({ ...FileServer.defaults, port: 0, ...overrides }).pipe(
        Layer.provide(FileStore.layer(folder)),
        Layer.provide(NodeContext.layer)
      )
    )
    return Effect.runSync(Effect.provide(FileServer.FileServer, context))
  })

/** A test client's connection to the server, with typed send and receive. */
export const connectTo = (address: { host: string; port: number }) =>
  Effect.gen(function* () {
    const wire = yield* Wire
    const connection = yield* wire.connect(address)
    return client(connection)
  })

export const client = (connection: Connection) => ({
  connection,
  send: (request: ServerRequest) => connection.send(ServerRequestSchema, request),
  receive: connection
    .read(ServerReplySchema)
    .pipe(
      Effect.flatMap(
        Option.match({ onNone: () => Effect.die("the server closed the connection"), onSome: Effect.succeed })
      )
    ),
  ask: (request: ServerRequest) =>
    connection.send(ServerRequestSchema, request).pipe(
      Effect.zipRight(connection.read(ServerReplySchema)),
      Effect.flatMap(
        Option.match({
          onNone: () => Effect.die("the server closed the connection"),
          onSome: (reply: ServerReply) => Effect.succeed(reply)
        })
      )
    ),
  payload: (size: number) =>
    connection.readPayload(size).pipe(
      Stream.runCollect,
      Effect.map((chunks) => Buffer.concat([...chunks]))
    )
})
