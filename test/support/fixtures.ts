/** Test fixtures: a served folder with every kind of entry a hostile request could aim at. */
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

export interface ServedFolder {
  readonly root: string
  readonly outside: string
  readonly big: Buffer
}

/** A temporary folder (removed with the scope) beside a secret file outside it. */
export const servedFolder = (bigSize = 4 * 1024 * 1024) =>
  Effect.acquireRelease(
    Effect.sync((): ServedFolder => {
      const base = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-test-"))
      const root = Path.join(base, "served")
      const outside = Path.join(base, "secret.txt")
      Fs.mkdirSync(root)
      Fs.mkdirSync(Path.join(root, "sub"))
      Fs.mkdirSync(Path.join(base, "elsewhere"))
      Fs.writeFileSync(outside, "the secret\n")
      Fs.writeFileSync(Path.join(base, "elsewhere", "x.txt"), "outside\n")
      const big = Crypto.randomBytes(bigSize)
      Fs.writeFileSync(Path.join(root, "big.bin"), big)
      Fs.writeFileSync(Path.join(root, "notes.txt"), "hello effect-lb\n")
      Fs.writeFileSync(Path.join(root, "empty"), "")
      Fs.writeFileSync(Path.join(root, ".hidden"), "dotfile\n")
      Fs.writeFileSync(Path.join(root, "sub", "inner.txt"), "inner\n")
      Fs.symlinkSync(Path.join(root, "notes.txt"), Path.join(root, "alias.txt"))
      Fs.symlinkSync(outside, Path.join(root, "escape.txt"))
      Fs.symlinkSync(Path.join(base, "elsewhere"), Path.join(root, "door"))
      return { root, outside, big }
    }),
    ({ root }) => Effect.sync(() => Fs.rmSync(Path.dirname(root), { recursive: true, force: true }))
  )

/** Names that must never be served from a `servedFolder`. */
export const refusedNames = [
  "../secret.txt",
  "..",
  ".",
  "",
  "/etc/passwd",
  "sub/inner.txt",
  "sub",
  "door",
  "door/x.txt",
  "escape.txt",
  ".hidden",
  "missing.txt",
  "..\\secret.txt",
  "notes.txt\u0000.png",
  "notes.txt/",
  "x".repeat(300)
]
