import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, type Scope } from "effect"
import * as FileStore from "../../../src/services/server/FileStore.js"
import { refusedNames, servedFolder } from "../../support/fixtures.js"

const withStore = <A, E>(use: (store: FileStore.FileStore["Type"]) => Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function* () {
    const folder = yield* servedFolder(1024)
    const store = yield* FileStore.make(folder.root)
    return yield* use(store)
  }).pipe(Effect.provide(NodeContext.layer))

describe("FileStore", () => {
  it.scoped("lists the regular files with their extension as type, symlinks inside included", () =>
    withStore((store) =>
      Effect.gen(function* () {
        expect(yield* store.list).toEqual({ "alias.txt": "txt", "big.bin": "bin", empty: "", "notes.txt": "txt" })
      })
    )
  )

  it.scoped("opens a served file with its exact size", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const file = yield* store.open("alias.txt")
        expect(file.size).toBe("hello effect-lb\n".length)
        const into = Buffer.alloc(64)
        const read = yield* Effect.promise(() => file.read(into, into.length, 0))
        expect(into.subarray(0, read).toString()).toBe("hello effect-lb\n")
        // Read at a position, as the sender does chunk by chunk.
        const rest = yield* Effect.promise(() => file.read(into, 4, 6))
        expect(into.subarray(0, rest).toString()).toBe("effe")
      })
    )
  )

  it.scoped("refuses every name that is not a plain served file", () =>
    withStore((store) =>
      Effect.forEach(refusedNames, (name) =>
        Effect.gen(function* () {
          const exit = yield* Effect.exit(store.open(name))
          expect(Exit.isFailure(exit), JSON.stringify(name)).toBe(true)
          if (Exit.isFailure(exit)) expect(String(exit.cause)).toContain("FileNotFound")
        })
      )
    )
  )

  it.scoped("will not start on a folder that does not exist", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(Layer.build(FileStore.layer("/nonexistent/effect-lb")))
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) expect(String(exit.cause)).toContain("FolderUnavailable")
    }).pipe(Effect.provide(NodeContext.layer))
  )
})
