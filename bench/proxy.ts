/**
 * Proxy mode against a minimal node:net pipe proxy and HAProxy (`mode tcp`), all in front of the
 * same small HTTP backend, measured with wrk in one run: requests/s and p99 latency, keep-alive and
 * a connection per request. Installs wrk and haproxy with apt-get when missing, or says why it
 * cannot and skips what it lacks.
 *
 *   npm run bench:proxy [-- --seconds 5 --connections 32 --rounds 2]
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { type Child, effectLb, fixed, median, start } from "./support.js"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    connections: { type: "string", default: "32" },
    rounds: { type: "string", default: "2" }
  }
})

const has = (command: string) => ChildProcess.spawnSync("sh", ["-c", `command -v ${command}`]).status === 0
const ensure = (command: string, pkg: string): boolean => {
  if (has(command)) return true
  console.log(`${command} is missing; installing the Debian package ${pkg}...`)
  ChildProcess.spawnSync("sh", ["-c", `apt-get update -qq && apt-get install -y -qq ${pkg}`], { stdio: "ignore" })
  if (has(command)) return true
  console.log(`  could not install ${pkg}: skipping what needs it`)
  return false
}

if (!ensure("wrk", "wrk")) {
  console.log("proxy benchmark skipped: wrk is not available")
  process.exit(0)
}
const withHaproxy = ensure("haproxy", "haproxy")
const here = Path.dirname(new URL(import.meta.url).pathname)
const children: Array<Child> = []
const tmp = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-proxy-bench-"))

/**
 * HAProxy in mode tcp on a free port, in front of `backend`. By default it runs as many threads as
 * there are cores (2 here) — the yardstick the aim is set against; `threads: 1` gives the per-core
 * comparison with the single-threaded Node proxies.
 */
const haproxy = async (backend: number, threads?: number): Promise<Child> => {
  const probe = await start([Path.join(here, "baseline-proxy.js"), `127.0.0.1:1`])
  const port = probe.port
  await probe.stop()
  const config = Path.join(tmp, `haproxy-${threads ?? "auto"}.cfg`)
  Fs.writeFileSync(
    config,
    [
      "global",
      "  maxconn 4096",
      ...(threads === undefined ? [] : [`  nbthread ${threads}`]),
      "defaults",
      "  mode tcp",
      "  timeout connect 3s",
      "  timeout client 60s",
      "  timeout server 60s",
      "frontend front",
      `  bind 127.0.0.1:${port}`,
      "  default_backend back",
      "backend back",
      "  balance roundrobin",
      `  server s1 127.0.0.1:${backend}`
    ].join("\n") + "\n"
  )
  const child = ChildProcess.spawn("haproxy", ["-f", config, "-db"], { stdio: "ignore" })
  await new Promise((r) => setTimeout(r, 500))
  return {
    port,
    pid: child.pid ?? 0,
    stop: () =>
      new Promise((done) => {
        child.once("exit", () => done())
        child.kill("SIGKILL")
      })
  }
}

interface Figure {
  readonly rps: number
  readonly p99ms: number
}

const wrk = (port: number, close: boolean): Figure => {
  const args = ["-t1", `-c${values.connections}`, `-d${values.seconds}s`, "--latency"]
  if (close) args.push("-H", "Connection: close")
  const out = ChildProcess.spawnSync("wrk", [...args, `http://127.0.0.1:${port}/`], { encoding: "utf8" }).stdout
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0)
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)/.exec(out)
  const scale = p99?.[2] === "us" ? 0.001 : p99?.[2] === "s" ? 1000 : 1
  return { rps, p99ms: Number(p99?.[1] ?? 0) * scale }
}

try {
  const backend = await start([Path.join(here, "http-backend.js")])
  children.push(backend)
  const lb = await start([
    effectLb,
    "balancer",
    "--port",
    "0",
    "--proxy-port",
    "0",
    "--health",
    "tcp",
    "--server",
    `127.0.0.1:${backend.port}`
  ])
  children.push(lb)
  // The balancer prints its proxy port first.
  const proxies: Array<[string, number]> = [["effect-lb proxy", lb.port]]
  const node = await start([Path.join(here, "baseline-proxy.js"), `127.0.0.1:${backend.port}`])
  children.push(node)
  proxies.push(["node:net pipe proxy", node.port])
  if (withHaproxy) {
    const ha = await haproxy(backend.port)
    children.push(ha)
    proxies.push(["HAProxy mode tcp", ha.port])
    const single = await haproxy(backend.port, 1)
    children.push(single)
    proxies.push(["HAProxy, 1 thread", single.port])
  }
  console.log(
    `proxy mode: wrk -t1 -c${values.connections} -d${values.seconds}s against a Node HTTP backend, ${values.rounds} interleaved rounds (median)`
  )
  for (const close of [false, true]) {
    const results = new Map<string, Array<Figure>>()
    for (const [, port] of proxies) wrk(port, close) // warm-up
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const [name, port] of proxies) results.set(name, [...(results.get(name) ?? []), wrk(port, close)])
    }
    console.log(`  ${close ? "connection per request" : "keep-alive"}:`)
    const rpsOf = (name: string) => median((results.get(name) ?? []).map((f) => f.rps))
    for (const [name] of proxies) {
      const figures = results.get(name) ?? []
      console.log(
        `    ${name.padEnd(22)} ${fixed(rpsOf(name), 0).padStart(7)} req/s   p99 ${fixed(median(figures.map((f) => f.p99ms)), 2)} ms`
      )
    }
    const ours = rpsOf("effect-lb proxy")
    console.log(`    effect-lb / node:net = ${fixed(ours / rpsOf("node:net pipe proxy"))}  (aim >= 0.9)`)
    if (withHaproxy) {
      console.log(`    effect-lb / HAProxy  = ${fixed(ours / rpsOf("HAProxy mode tcp"))}  (aim >= 0.7)`)
      console.log(`    effect-lb / HAProxy, 1 thread = ${fixed(ours / rpsOf("HAProxy, 1 thread"))}  (per core)`)
    }
  }
} finally {
  for (const child of children.reverse()) await child.stop()
  Fs.rmSync(tmp, { recursive: true, force: true })
}
