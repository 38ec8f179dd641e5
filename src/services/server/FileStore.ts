/**
 * The served folder: what is in it, and the bytes of one file — never a byte from outside it.
 * A requested name must be a plain file name (no separators, no `..`, no leading dot); its real
 * path, symlinks resolved, must still lie inside the folder; and it must be a regular file.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Context, Effect, Layer, Schema, type Scope } from "effect"
import * as Fs from "node:fs"
import * as NodePath from "node:path"
import type { PayloadFile } from "../wire/FilePayload.js"
import { FileNotFound } from "../../domain/Errors.js"

/** The folder to serve does not exist or is not a folder. */
export class FolderUnavailable extends Schema.TaggedError<FolderUnavailable>()("FolderUnavailable", {
  folder: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot serve ${this.folder}: ${this.reason}`
  }
}

/** A served file, open: `size` as it was when opened, read at any position (`wire/FilePayload.ts` sends it). */
export interface OpenFile extends PayloadFile {
  readonly name: string
}

export class FileStore extends Context.Tag("effect-lb/FileStore")<
  FileStore,
  {
    /** The real path of the served folder. */
    readonly folder: string
    /** `{name: type}` of the regular files served, type being the extension without its dot. */
    readonly list: Effect.Effect<Record<string, string>, FileNotFound>
    /**
     * `[name, type, size]` of the files served whose names come after `after` (all without it), in
     * name order (JavaScript's string order), while `take` accepts them; `complete` when none was refused.
     */
    readonly entries: (
      after: string | undefined,
      take: (name: string, type: string, size: number) => boolean
    ) => Effect.Effect<
      { readonly entries: ReadonlyArray<readonly [string, string, number]>; readonly complete: boolean },
      FileNotFound
    >
    /** Opens one file for reading; it is closed with the scope. */
    readonly open: (name: string) => Effect.Effect<OpenFile, FileNotFound, Scope.Scope>
  }
>() {}

const plainName = /^[^/\\\0.][^/\\\0]{0,254}$/

type Entries = FileStore["Type"]["entries"]

/** A file's size in bytes (links followed), or `undefined` if it cannot be had. */
const sizeOf = (path: string): Effect.Effect<number | undefined> =>
  Effect.promise(() =>
    Fs.promises.stat(path).then(
      (stat) => (stat.isFile() ? stat.size : undefined),
      () => undefined
    )
  )

/**
 * The folder's files in name order, a page at a time. A regular file directly in the folder is
 * served as it is; a link or anything unusual only if `resolve` takes it.
 */
const listing =
  (root: string, resolve: (name: string) => Effect.Effect<string, FileNotFound>): Entries =>
  (after, take) =>
    Effect.gen(function* () {
      const found = yield* Effect.tryPromise({
        try: () => Fs.promises.readdir(root, { withFileTypes: true }),
        catch: (error) =>
          new FileNotFound({
            message: `the served folder cannot be read: ${error instanceof Error ? error.message : String(error)}`
          })
      })
      const names = found
        .filter((entry) => plainName.test(entry.name) && (after === undefined || entry.name > after))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      const taken: Array<readonly [string, string, number]> = []
      // A slice at a time, so a page that is full stops the checking there.
      for (let start = 0; start < names.length; start += 256) {
        const slice = names.slice(start, start + 256)
        const linked = new Set(
          yield* Effect.filter(
            slice.filter((entry) => !entry.isFile() && !entry.isDirectory()),
            (entry) => Effect.isSuccess(resolve(entry.name)),
            { concurrency: 16 }
          )
        )
        const served = slice.filter((entry) => entry.isFile() || linked.has(entry))
        const sizes = yield* Effect.forEach(served, (entry) => sizeOf(NodePath.join(root, entry.name)), {
          concurrency: 16
        })
        for (const [i, entry] of served.entries()) {
          const size = sizes[i]
          // Gone since the folder was read: not listed.
          if (size === undefined) continue
          const type = NodePath.extname(entry.name).slice(1)
          if (!take(entry.name, type, size)) return { entries: taken, complete: false }
          taken.push([entry.name, type, size])
        }
      }
      return { entries: taken, complete: true }
    })

export const make = (folder: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const unavailable = (reason: string) => new FolderUnavailable({ folder, reason })
    const root = yield* fs.realPath(folder).pipe(Effect.mapError((error) => unavailable(error.message)))
    const info = yield* fs.stat(root).pipe(Effect.mapError((error) => unavailable(error.message)))
    if (info.type !== "Directory") return yield* unavailable("not a folder")

    const notFound = (name: string) =>
      new FileNotFound({ message: `no file named ${JSON.stringify(name)} is served here` })

    /** The real path of a served regular file, or FileNotFound. */
    const resolve = (name: string) =>
      Effect.gen(function* () {
        if (!plainName.test(name)) return yield* notFound(name)
        const real = yield* fs.realPath(path.join(root, name)).pipe(Effect.mapError(() => notFound(name)))
        if (path.dirname(real) !== root && !real.startsWith(root + path.sep)) return yield* notFound(name)
        const stat = yield* fs.stat(real).pipe(Effect.mapError(() => notFound(name)))
        if (stat.type !== "File") return yield* notFound(name)
        return real
      })

    const entries = listing(root, resolve)

    const list = Effect.map(
      entries(undefined, () => true),
      (page) => Object.fromEntries(page.entries.map(([name, type]) => [name, type]))
    )

    const open = (name: string) =>
      Effect.gen(function* () {
        const real = yield* resolve(name)
        // The descriptor is closed with the scope. Nothing past the size announced to the peer is
        // sent, even if the file grows meanwhile (the sender reads exactly `size` bytes).
        const { size, handle } = yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: async () => {
              const handle = await Fs.promises.open(real, Fs.constants.O_RDONLY | Fs.constants.O_NOFOLLOW)
              const stat = await handle.stat().catch(async (error: unknown) => {
                await handle.close()
                throw error
              })
              if (!stat.isFile() || stat.size === 0) {
                await handle.close()
                return { size: stat.isFile() ? 0 : -1, handle: undefined }
              }
              return { size: stat.size, handle }
            },
            catch: () => notFound(name)
          }),
          ({ handle }) =>
            handle === undefined ? Effect.void : Effect.promise(() => handle.close().catch(() => undefined))
        )
        if (size < 0) return yield* notFound(name)
        const read = (into: Buffer, length: number, position: number): Promise<number> =>
          handle === undefined
            ? Promise.resolve(0)
            : handle.read(into, 0, length, position).then((result) => result.bytesRead)
        return { name, size, read }
      })

    return FileStore.of({ folder: root, list, entries, open })
  })

export const layer = (folder: string): Layer.Layer<FileStore, FolderUnavailable, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(FileStore, make(folder))
