/**
 * Downloads as people expect, from the real command line: sizes in the list, progress on stderr
 * (plain lines without a terminal), and a file already in the folder kept unless `--force`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { runToEnd, spawn } from "../support/process.js"

const listening = /listening on 127\.0\.0\.1:(\d+)/

describe("effect-lb client downloads (real processes)", () => {
  it.scopedLive(
    "lists sizes, shows progress on stderr, and keeps a file already there unless --force",
    () =>
      Effect.gen(function* () {
        const base = yield* Effect.acquireRelease(
          Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-downloads-"))),
          (base) => Effect.sync(() => Fs.rmSync(base, { recursive: true, force: true }))
        )
        const served = Path.join(base, "served")
        const out = Path.join(base, "out")
        Fs.mkdirSync(served)
        Fs.mkdirSync(out)
        const big = Crypto.randomBytes(3 * 1024 * 1024)
        Fs.writeFileSync(Path.join(served, "big.bin"), big)
        Fs.writeFileSync(Path.join(served, "notes.txt"), "hello\n")
        const balancer = yield* spawn(["balancer", "--port", "0"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const server = yield* spawn(["server", "--port", "0", "--files", served, "--balancer", `127.0.0.1:${port}`])
        yield* server.waitFor(listening)
        const client = (...args: ReadonlyArray<string>) =>
          runToEnd(["client", "--balancer", `127.0.0.1:${port}`, ...args])

        // Wait for the server to be live: the list works once it is.
        let list = yield* client("list")
        for (let i = 0; i < 50 && list.code !== 0; i++) {
          yield* Effect.sleep("100 millis")
          list = yield* client("list")
        }
        expect(list.output).toMatch(/^big\.bin\tbin\t3\.0 MiB\nnotes\.txt\ttxt\t6 B\n\(2 files, from /)
        const listed = yield* client("--json", "list")
        expect(JSON.parse(listed.output)).toMatchObject({ sizes: { "big.bin": 3 * 1024 * 1024, "notes.txt": 6 } })

        const first = yield* client("download", "big.bin", "--out", out)
        expect(first.code).toBe(0)
        expect(first.output).toMatch(/^saved \S+big\.bin \(3\.0 MiB\) from \S+ \(127\.0\.0\.1:\d+\)\n$/)
        // Without a terminal: plain lines, the last at 100%, no carriage returns.
        expect(first.errors).toMatch(/^big\.bin: 100% \(3\.0 MiB of 3\.0 MiB, .+\/s, 0:00 left\)$/m)
        expect(first.errors).not.toContain("\r")

        Fs.writeFileSync(Path.join(out, "big.bin"), "mine")
        const again = yield* client("download", "big.bin", "--out", out)
        expect(again).toEqual({
          code: 1,
          output: "",
          errors: `effect-lb: big.bin exists in ${out}; use --force to overwrite\n`
        })
        expect(Fs.readFileSync(Path.join(out, "big.bin"), "utf8")).toBe("mine")

        const forced = yield* client("--json", "download", "big.bin", "--out", out, "--force")
        expect(forced.code).toBe(0)
        expect(forced.errors).toBe("")
        expect(JSON.parse(forced.output)).toMatchObject({ size: 3 * 1024 * 1024 })
        expect(Fs.readFileSync(Path.join(out, "big.bin")).equals(big)).toBe(true)
        expect(Fs.readdirSync(out)).toEqual(["big.bin"])
      }),
    60_000
  )
})
