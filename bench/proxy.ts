/**
 * Proxy mode against a minimal node:net pipe proxy and HAProxy (`mode tcp`), all in front of the
 * same small HTTP backend, measured with wrk in one run: requests/s and p99 latency, keep-alive and
 * a connection per request. Then TLS: effect-lb terminating TLS on its proxy listener
 * (`--tls-cert/--tls-key --tls-listeners proxy`) beside HAProxy's `bind ... ssl crt` in mode tcp,
 * both plain to the same backend, and both again speaking TLS to an HTTPS backend (`--backend-tls`,
 * HAProxy's `server ... ssl`), wrk over https; the throw-away CA and certificate (ECDSA P-256, or
 * RSA 2048 with `--key rsa`) are made with openssl in a temporary folder removed afterwards.
 * Installs wrk and haproxy with apt-get when missing, or says why it cannot and skips what it lacks.
 *
 *   npm run bench:proxy [-- --seconds 4 --connections 32 --rounds 2 --only plain|tls --key ec|rsa --probe]
 *
 * `--node-only` leaves HAProxy out (quicker rounds, for profiling). `--probe` loads `probe.ts` into the two Node proxies (not HAProxy) and prints, per proxy, what
 * their event loops and garbage collectors did during the rounds: event-loop delay p99 and max, and
 * scavenges, full collections and pause time per 1,000 requests.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { type Child, effectLb, fixed, median, Probe, type ProbeFigures, start } from "./support.js"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "4" },
    connections: { type: "string", default: "32" },
    rounds: { type: "string", default: "2" },
    only: { type: "string" },
    key: { type: "string", default: "ec" },
    probe: { type: "boolean", default: false },
    "node-only": { type: "boolean", default: false }
  }
})
const probe = values.probe ? Probe.make() : undefined
/** Node flags for a proxy under `--probe`. */
const probing = (node: boolean): ReadonlyArray<string> => (node && probe !== undefined ? probe.nodeFlags : [])
/** The proxies started with the probe. */
const probedPids = new Set<number>()

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
const withHaproxy = !values["node-only"] && ensure("haproxy", "haproxy")
const withOpenssl = ensure("openssl", "openssl")
const sections = values.only === undefined ? ["plain", "tls"] : [values.only]
const here = Path.dirname(new URL(import.meta.url).pathname)
const children: Array<Child> = []
const tmp = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-proxy-bench-"))

/** The TLS side of a HAProxy: `pem` (certificate then key) on its bind, `ca` to check an HTTPS backend. */
interface HaproxyTls {
  readonly pem?: string
  readonly ca?: string
}

/**
 * HAProxy in mode tcp on a free port, in front of `backend`. By default it runs as many threads as
 * there are cores (2 here) — the yardstick the aim is set against; `threads: 1` gives the per-core
 * comparison with the single-threaded Node proxies.
 */
const haproxy = async (backend: number, threads?: number, tls: HaproxyTls = {}): Promise<Child> => {
  const probe = await start([Path.join(here, "baseline-proxy.js"), `127.0.0.1:1`])
  const port = probe.port
  await probe.stop()
  const config = Path.join(tmp, `haproxy-${threads ?? "auto"}-${port}.cfg`)
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
      `  bind 127.0.0.1:${port}${tls.pem === undefined ? "" : ` ssl crt ${tls.pem}`}`,
      "  default_backend back",
      "backend back",
      "  balance roundrobin",
      `  server s1 127.0.0.1:${backend}${tls.ca === undefined ? "" : ` ssl verify required ca-file ${tls.ca}`}`
    ].join("\n") + "\n"
  )
  const child = ChildProcess.spawn("haproxy", ["-f", config, "-db"], { stdio: "ignore" })
  await new Promise((r) => setTimeout(r, 500))
  return {
    port,
    pid: child.pid ?? 0,
    stop: () =>
      new Promise((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done()
        child.once("exit", () => done())
        child.kill("SIGKILL")
      })
  }
}

interface Figure {
  readonly rps: number
  readonly p50ms: number
  readonly p99ms: number
  /** wrk's socket errors and non-2xx answers, summed. */
  readonly errors: number
  /** The proxy's CPU time (user + system, all its threads) per request, in µs. */
  readonly cpuUs: number
  /** Requests wrk completed. */
  readonly requests: number
  /** With `--probe`, for a Node proxy: its event loop and collector during the run. */
  readonly probe?: ProbeFigures | undefined
}

/** A process's CPU time so far, in clock ticks (1/100 s), from /proc; 0 where there is no /proc. */
const cpuTicks = (pid: number): number => {
  try {
    // The fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? []
    return Number(fields[11] ?? 0) + Number(fields[12] ?? 0)
  } catch {
    return 0
  }
}

const millis = (out: string, percentile: string): number => {
  const match = new RegExp(`\\s${percentile}%\\s+([\\d.]+)(us|ms|s)`).exec(out)
  const scale = match?.[2] === "us" ? 0.001 : match?.[2] === "s" ? 1000 : 1
  return Number(match?.[1] ?? 0) * scale
}

const wrk = (proxy: Child, close: boolean, scheme = "http", seconds = values.seconds): Figure => {
  const args = ["-t1", `-c${values.connections}`, `-d${seconds}s`, "--latency"]
  if (close) args.push("-H", "Connection: close")
  const probed = probe !== undefined && probedPids.has(proxy.pid)
  if (probed) probe.reset(proxy.pid)
  const before = cpuTicks(proxy.pid)
  const out = ChildProcess.spawnSync("wrk", [...args, `${scheme}://127.0.0.1:${proxy.port}/`], {
    encoding: "utf8"
  }).stdout
  const ticks = cpuTicks(proxy.pid) - before
  const seen = probed ? probe.read(proxy.pid) : undefined
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0)
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)
  const errors = (socketErrors?.slice(1) ?? []).reduce((sum, n) => sum + Number(n), non2xx)
  const cpuUs = requests > 0 ? (ticks * 10_000) / requests : 0
  return { rps, p50ms: millis(out, "50"), p99ms: millis(out, "99"), errors, cpuUs, requests, probe: seen }
}

/**
 * wrk through each proxy, keep-alive then a connection per request: a short warm-up each, then
 * `rounds` rounds, each round through every proxy in turn (the machine's noise falls on all alike).
 */
const measure = (
  proxies: ReadonlyArray<readonly [string, Child]>,
  close: boolean,
  scheme: string
): ((name: string) => Figure) => {
  const results = new Map<string, Array<Figure>>()
  for (const [, proxy] of proxies) wrk(proxy, close, scheme, "1") // warm-up
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const [name, proxy] of proxies) results.set(name, [...(results.get(name) ?? []), wrk(proxy, close, scheme)])
  }
  return (name) => {
    const figures = results.get(name) ?? []
    const requests = figures.reduce((sum, f) => sum + f.requests, 0)
    return {
      rps: median(figures.map((f) => f.rps)),
      p50ms: median(figures.map((f) => f.p50ms)),
      p99ms: median(figures.map((f) => f.p99ms)),
      errors: figures.reduce((sum, f) => sum + f.errors, 0),
      cpuUs: median(figures.map((f) => f.cpuUs)),
      requests,
      probe: probeOver(figures)
    }
  }
}

/** The probe's figures over several rounds: the loop's median p99 and its worst, collections summed. */
const probeOver = (figures: ReadonlyArray<Figure>): ProbeFigures | undefined => {
  const seen = figures.flatMap((f) => (f.probe === undefined ? [] : [f.probe]))
  if (seen.length === 0) return undefined
  const sum = (pick: (p: ProbeFigures) => number) => seen.reduce((total, p) => total + pick(p), 0)
  return {
    loopP50Ms: median(seen.map((p) => p.loopP50Ms)),
    loopP99Ms: median(seen.map((p) => p.loopP99Ms)),
    loopMaxMs: Math.max(...seen.map((p) => p.loopMaxMs)),
    minor: sum((p) => p.minor),
    major: sum((p) => p.major),
    pausedMs: sum((p) => p.pausedMs),
    maxPauseMs: Math.max(...seen.map((p) => p.maxPauseMs))
  }
}

/** `met` or `not met`, for an aim line. */
const verdict = (met: boolean) => (met ? "met" : "not met")

/** A probed proxy's event loop and collector, per 1,000 requests where it is a count. */
const probeLine = (figure: Figure): string => {
  const p = figure.probe
  if (p === undefined) return ""
  const per1k = (n: number) => fixed((n * 1000) / Math.max(1, figure.requests))
  return (
    `      loop delay p99 ${fixed(p.loopP99Ms)} ms, max ${fixed(p.loopMaxMs, 1)} ms; ` +
    `GC per 1,000 requests: ${per1k(p.minor)} scavenges, ${per1k(p.major)} full, ${per1k(p.pausedMs)} ms paused (longest ${fixed(p.maxPauseMs, 1)} ms)`
  )
}

const plain = async () => {
  const backend = await start([Path.join(here, "http-backend.js")])
  children.push(backend)
  const lb = await start([
    ...probing(true),
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
  const proxies: Array<[string, Child]> = [["effect-lb proxy", lb]]
  const node = await start([...probing(true), Path.join(here, "baseline-proxy.js"), `127.0.0.1:${backend.port}`])
  children.push(node)
  proxies.push(["node:net pipe proxy", node])
  if (probe !== undefined) for (const child of [lb, node]) probedPids.add(child.pid)
  if (withHaproxy) {
    const ha = await haproxy(backend.port)
    children.push(ha)
    proxies.push(["HAProxy mode tcp", ha])
    const single = await haproxy(backend.port, 1)
    children.push(single)
    proxies.push(["HAProxy, 1 thread", single])
  }
  console.log(
    `proxy mode: wrk -t1 -c${values.connections} -d${values.seconds}s against a Node HTTP backend, ${values.rounds} interleaved rounds (median); CPU per request from /proc`
  )
  for (const close of [false, true]) {
    const figureOf = measure(proxies, close, "http")
    console.log(`  ${close ? "connection per request" : "keep-alive"}:`)
    for (const [name] of proxies) {
      const figure = figureOf(name)
      console.log(
        `    ${name.padEnd(22)} ${fixed(figure.rps, 0).padStart(7)} req/s   p50 ${fixed(figure.p50ms, 2)} ms   p99 ${fixed(figure.p99ms, 2)} ms   CPU ${fixed(figure.cpuUs, 1).padStart(5)} µs/req` +
          (figure.errors > 0 ? `   (${figure.errors} wrk errors)` : "")
      )
      const probed = probeLine(figure)
      if (probed !== "") console.log(probed)
    }
    printAims(figureOf, close)
  }
  for (const child of children.splice(0).reverse()) await child.stop()
}

/**
 * The plain proxy's aims, each a ratio with its verdict: against the plain Node proxy, throughput
 * (≥ 0.9 kept alive, ≥ 0.95 with a connection per request) and p99 latency (≤ 1.3× either way);
 * against two-thread HAProxy, throughput ≥ 0.7.
 */
const printAims = (figureOf: (name: string) => Figure, close: boolean) => {
  const ours = figureOf("effect-lb proxy")
  const node = figureOf("node:net pipe proxy")
  const rpsAim = close ? 0.95 : 0.9
  const rps = ours.rps / node.rps
  const p99 = ours.p99ms / node.p99ms
  console.log(`    effect-lb / node:net throughput = ${fixed(rps)}  aim >= ${rpsAim}: ${verdict(rps >= rpsAim)}`)
  console.log(`    effect-lb / node:net p99        = ${fixed(p99)}  aim <= 1.3: ${verdict(p99 <= 1.3)}`)
  console.log(`    effect-lb / node:net CPU/req    = ${fixed(ours.cpuUs / node.cpuUs)}`)
  if (withHaproxy) {
    const ha = ours.rps / figureOf("HAProxy mode tcp").rps
    console.log(`    effect-lb / HAProxy  throughput = ${fixed(ha)}  aim >= 0.7: ${verdict(ha >= 0.7)}`)
    console.log(
      `    effect-lb / HAProxy, 1 thread  = ${fixed(ours.rps / figureOf("HAProxy, 1 thread").rps)}  (per core)`
    )
  }
}

/** A throw-away CA and a certificate it signed for 127.0.0.1, in `dir`; the key type from `--key`. */
const certificates = (dir: string) => {
  const openssl = (args: ReadonlyArray<string>) =>
    ChildProcess.execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"], timeout: 20_000 })
  const newKey = (file: string) =>
    values.key === "rsa"
      ? openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", file])
      : openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file])
  newKey("ca.key")
  openssl(["req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=bench CA"])
  newKey("server.key")
  openssl(["req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"])
  Fs.writeFileSync(Path.join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
  openssl([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "1",
    "-extfile",
    "server.ext"
  ])
  const at = (name: string) => Path.join(dir, name)
  // HAProxy reads the certificate and its key from one file.
  Fs.writeFileSync(at("combined.pem"), Fs.readFileSync(at("server.pem")) + Fs.readFileSync(at("server.key")).toString())
  return { ca: at("ca.pem"), cert: at("server.pem"), key: at("server.key"), combined: at("combined.pem") }
}

const tls = async () => {
  if (!withOpenssl) return console.log("TLS proxy benchmark skipped: openssl is not available")
  const dir = Fs.mkdtempSync(Path.join(tmp, "tls-"))
  const certs = certificates(dir)
  const backend = await start([Path.join(here, "http-backend.js")])
  children.push(backend)
  const secureBackend = await start([Path.join(here, "http-backend.js"), certs.cert, certs.key])
  children.push(secureBackend)
  const balancer = (server: number, backendTls: boolean) =>
    start([
      effectLb,
      "balancer",
      "--port",
      "0",
      "--proxy-port",
      "0",
      "--health",
      "tcp",
      "--tls-cert",
      certs.cert,
      "--tls-key",
      certs.key,
      "--tls-listeners",
      "proxy",
      ...(backendTls ? ["--backend-tls", "--backend-ca", certs.ca] : []),
      "--server",
      `127.0.0.1:${server}`
    ])
  const lb = await balancer(backend.port, false)
  children.push(lb)
  // The balancer prints its proxy port first.
  const proxies: Array<[string, Child]> = [["effect-lb TLS proxy", lb]]
  const node = await start([Path.join(here, "baseline-proxy.js"), `127.0.0.1:${backend.port}`, certs.cert, certs.key])
  children.push(node)
  proxies.push(["node:tls pipe proxy", node])
  if (withHaproxy) {
    const ha = await haproxy(backend.port, undefined, { pem: certs.combined })
    children.push(ha)
    proxies.push(["HAProxy ssl, mode tcp", ha])
    const single = await haproxy(backend.port, 1, { pem: certs.combined })
    children.push(single)
    proxies.push(["HAProxy ssl, 1 thread", single])
  }
  const lbBoth = await balancer(secureBackend.port, true)
  children.push(lbBoth)
  proxies.push(["effect-lb TLS both ways", lbBoth])
  if (withHaproxy) {
    const haBoth = await haproxy(secureBackend.port, undefined, { pem: certs.combined, ca: certs.ca })
    children.push(haBoth)
    proxies.push(["HAProxy TLS both ways", haBoth])
  }
  console.log(
    `TLS proxy: wrk -t1 -c${values.connections} -d${values.seconds}s over https (${values.key === "rsa" ? "RSA 2048" : "ECDSA P-256"} certificate), ` +
      `${values.rounds} interleaved rounds (median); "both ways": TLS to an HTTPS backend as well`
  )
  for (const close of [false, true]) {
    const figureOf = measure(proxies, close, "https")
    console.log(`  ${close ? "a TLS connection (full handshake) per request" : "keep-alive"}:`)
    for (const [name] of proxies) {
      const figure = figureOf(name)
      console.log(
        `    ${name.padEnd(24)} ${fixed(figure.rps, 0).padStart(7)} req/s   p50 ${fixed(figure.p50ms, 2)} ms   p99 ${fixed(figure.p99ms, 2)} ms   CPU ${fixed(figure.cpuUs, 0).padStart(4)} µs/req` +
          (figure.errors > 0 ? `   (${figure.errors} wrk errors)` : "")
      )
    }
    const ratio = (ours: string, theirs: string) => fixed(figureOf(ours).rps / figureOf(theirs).rps)
    console.log(`    effect-lb / node:tls = ${ratio("effect-lb TLS proxy", "node:tls pipe proxy")}  (aim >= 0.9)`)
    if (withHaproxy) {
      // The aim: what Node's own TLS server reaches (node:tls costs about twice HAProxy's CPU per
      // handshake and 1.5 times per request kept alive; effect-lb can only match node:tls).
      console.log(`    effect-lb / HAProxy  = ${ratio("effect-lb TLS proxy", "HAProxy ssl, mode tcp")}  (aim >= 0.45)`)
      console.log(
        `    effect-lb / HAProxy, 1 thread = ${ratio("effect-lb TLS proxy", "HAProxy ssl, 1 thread")}  (per core)`
      )
      console.log(
        `    both ways: effect-lb / HAProxy = ${ratio("effect-lb TLS both ways", "HAProxy TLS both ways")}  (aim >= 0.45, as one side: both resume their backend TLS sessions)`
      )
    }
  }
}

try {
  if (sections.includes("plain")) await plain()
  if (sections.includes("tls")) await tls()
} finally {
  for (const child of children.reverse()) await child.stop()
  Fs.rmSync(tmp, { recursive: true, force: true })
}
