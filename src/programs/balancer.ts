/** `effect-lb balancer`: the balancer port, its registry, strategies and health monitor. */
import { Command, Options } from "@effect/cli"
import { Console, Duration, Effect, Layer, Option } from "effect"
import * as Os from "node:os"
import { formatEndpoint, Host, ServerId } from "../domain/Server.js"
import * as Admin from "../services/balancer/admin/AdminConfig.js"
import * as Balancer from "../services/balancer/Balancer.js"
import * as ControlPlane from "../services/balancer/ControlPlane.js"
import * as HealthMonitor from "../services/balancer/HealthMonitor.js"
import * as Operator from "../services/balancer/Operator.js"
import * as Proxy from "../services/balancer/Proxy.js"
import * as Reaper from "../services/balancer/Reaper.js"
import * as Reload from "../services/balancer/Reload.js"
import * as ServerRegistry from "../services/balancer/ServerRegistry.js"
import * as RedisStore from "../services/balancer/shared/RedisStore.js"
import * as Cluster from "../services/balancer/shared/Cluster.js"
import * as SharedRegistry from "../services/balancer/shared/SharedRegistry.js"
import { Strategies } from "../services/balancer/strategies/Catalog.js"
import * as Wire from "../services/wire/Wire.js"
import { ignoringHangup, reloadingCertificatesOnHangup, reloadingOnHangup } from "./hangup.js"
import type { ListenerTls } from "../services/wire/Tls.js"
import { type BalancerTls, reloadTls, startTls } from "./balancerTls.js"
import { certificateOptions } from "./tlsOptions.js"
import { hintBusyPort } from "./listen.js"
import { version } from "./version.js"
import {
  allTlsListeners,
  type BalancerOptions,
  desiredFrom,
  passiveDefaults,
  settingsFrom,
  tunablesOf
} from "./balancerSettings.js"
import { loadConfig, rules } from "./configFile.js"
import {
  fileRule,
  accessLog,
  checked,
  checkedToken,
  durationText,
  optional,
  optionalPort,
  type Rule,
  serverRule,
  token,
  withDefault
} from "./options.js"

/**
 * The admin server (HTTP API, dashboard, /metrics), its module loaded only when asked for: a
 * balancer without --admin-port does not load the HTTP stack or build the dashboard's page.
 */
const adminLayer = (config: Admin.AdminConfig) =>
  Layer.unwrapEffect(
    Effect.promise(() => import("../services/balancer/admin/Admin.js")).pipe(
      Effect.map((module) => module.layer(config))
    )
  )

/**
 * With `--registry`: the shared registry over `decision`, and the cluster's view, on one store (a
 * layer is built once however often it is given).
 */
const sharedLayer = <E, R>(
  registry: NonNullable<BalancerOptions["registry"]>,
  decision: Layer.Layer<Balancer.Balancer | ServerRegistry.ServerRegistry, E, R>,
  maxServers: number
) => {
  const store = RedisStore.layer(registry.store)
  const sync = SharedRegistry.layer({ ...SharedRegistry.defaults, balancerId: registry.balancerId, maxServers }).pipe(
    Layer.provide(Layer.merge(decision, store))
  )
  const cluster = Cluster.layer({
    ...Cluster.defaults,
    balancerId: registry.balancerId,
    version,
    url: RedisStore.formatTarget(registry.store.target),
    namespace: registry.store.namespace
  })
  return cluster.pipe(Layer.provideMerge(sync), Layer.provide(store))
}

/** Everything a balancer is, as one layer: used by this command and by the playground. */
export const balancerLayer = (options: BalancerOptions) => {
  const seed = Layer.effectDiscard(
    Effect.flatMap(ServerRegistry.ServerRegistry, (registry) =>
      Effect.forEach(options.servers, (server) =>
        registry.add(
          {
            ...server,
            id: ServerId.make(formatEndpoint(server)),
            ...(options.tls?.backend === true ? { tls: true } : {})
          },
          options.serversOrigin ?? "configured"
        )
      )
    )
  )
  const reaper = Reaper.layer({ removeDeadAfter: options.removeDeadAfter ?? Reaper.defaults.removeDeadAfter })
  const decision = Balancer.layer(options.strategy).pipe(
    Layer.provideMerge(
      ServerRegistry.layer({
        ...ServerRegistry.defaultConfig,
        maxServers: options.maxServers ?? ServerRegistry.defaultConfig.maxServers,
        ...tunablesOf(options)
      })
    ),
    Layer.provideMerge(Strategies.layer)
  )
  // With --registry, the registry and the balancer everyone else sees are the shared ones, over these.
  const registry = options.registry
  const shared =
    registry === undefined
      ? decision
      : Layer.merge(
          sharedLayer(registry, decision, options.maxServers ?? ServerRegistry.defaultConfig.maxServers),
          Strategies.layer
        )
  const core = Operator.layer({ ...Operator.defaults, token: Option.getOrUndefined(options.token) }).pipe(
    Layer.provideMerge(shared)
  )
  const plane = ControlPlane.layer({
    ...ControlPlane.defaults,
    host: options.host,
    port: options.port,
    idleTimeout: options.idleTimeout ?? ControlPlane.defaults.idleTimeout,
    accessLog: options.accessLog === true,
    tls: options.balancerTls
  })
  const proxy:
    | Layer.Layer<never, Wire.ListenFailed, Balancer.Balancer | ServerRegistry.ServerRegistry>
    | Layer.Layer<Proxy.Proxy, Wire.ListenFailed, Balancer.Balancer | ServerRegistry.ServerRegistry> =
    options.proxy === undefined ? Layer.empty : Proxy.layer(options.proxy)
  const admin:
    | Layer.Layer<never, Wire.ListenFailed, Operator.Operator | ServerRegistry.ServerRegistry | Strategies>
    | Layer.Layer<Admin.Admin, Wire.ListenFailed, Operator.Operator | ServerRegistry.ServerRegistry | Strategies> =
    options.admin === undefined ? Layer.empty : adminLayer({ version, ...options.admin })
  const reloader:
    | Layer.Layer<never>
    | Layer.Layer<
        Reload.Reloader,
        never,
        ServerRegistry.ServerRegistry | Operator.Operator | Balancer.Balancer | HealthMonitor.HealthMonitor
      > = options.reload === undefined ? Layer.empty : Reload.layer(options.reload)
  // The admin server is built after the listeners, so its status can say where they listen; the
  // reloader after the proxy, whose PROXY protocol settings it changes.
  return admin.pipe(
    Layer.provideMerge(reloader.pipe(Layer.provideMerge(Layer.mergeAll(plane, proxy)))),
    Layer.provideMerge(
      Layer.mergeAll(HealthMonitor.layer(options.monitor), seed, reaper).pipe(Layer.provideMerge(core))
    ),
    Layer.provideMerge(Wire.layer)
  )
}

export const strategyRule = rules.strategy

export const strategyOption = withDefault("strategy", strategyRule, "round-robin", "how servers are picked")

/** An option that may be left out for the settings file (or the default, `fallback`) to decide. */
const setting = <A>(name: string, rule: Rule<A>, fallback: NoInfer<A>, description: string) =>
  optional(name, rule, description, Duration.isDuration(fallback) ? durationText(fallback) : String(fallback))

/** The balancer's id by default: this host and the balancer port, the same across restarts. */
const defaultBalancerId = (port: number) => `${Os.hostname()}:${port === 0 ? `0-${process.pid}` : port}`

const options = {
  registry: optional(
    "registry",
    rules.registry,
    "share the servers, their weights and drains, and the strategy with the other balancers on this Redis",
    "none: this balancer alone"
  ),
  registryNamespace: optional(
    "registry-namespace",
    rules.registryNamespace,
    "prefix of this cluster's keys and channel in that Redis (several clusters can share one)",
    RedisStore.defaultNamespace
  ),
  balancerId: optional(
    "balancer-id",
    rules.balancerId,
    "this balancer's name in the shared registry",
    "this host's name and the balancer port"
  ),
  config: optional(
    "config",
    { says: "a file name", placeholder: "FILE", decode: (text) => (text === "" ? Option.none() : Option.some(text)) },
    "read the settings from this YAML or JSON file (reloaded on SIGHUP); a flag given wins over it",
    "none"
  ),
  port: setting("port", rules.port, ControlPlane.defaults.port, "port of the balancer (0 picks a free port)"),
  host: setting("host", rules.host, Host.make(ControlPlane.defaults.host), "address to listen on"),
  strategy: setting("strategy", rules.strategy, "round-robin", "how servers are picked"),
  servers: Options.text("server").pipe(
    Options.withPseudoName(serverRule.placeholder),
    Options.repeated,
    Options.mapEffect((texts) => Effect.forEach(texts, checked("--server", serverRule))),
    Options.withDescription(
      `a backend server, repeatable; servers may also register themselves [default: none; ${serverRule.says}]`
    )
  ),
  probeInterval: setting(
    "probe-interval",
    rules.probeInterval,
    HealthMonitor.defaults.probeInterval,
    "how often each server is probed"
  ),
  deadAfter: setting(
    "dead-after",
    rules.deadAfter,
    HealthMonitor.defaults.deadAfter,
    "each probe's time limit, and how long a live server's probes must fail before it is dead"
  ),
  rise: setting(
    "rise",
    rules.rise,
    HealthMonitor.defaults.rise,
    "answered probes in a row that make a dead server live"
  ),
  fall: setting(
    "fall",
    rules.fall,
    HealthMonitor.defaults.fall,
    "failed probes in a row (spanning dead-after) that make a live server dead"
  ),
  proxyPort: optionalPort(
    "proxy-port",
    "also proxy TCP connections on this port to the servers (L4, like HAProxy's mode tcp)"
  ),
  health: setting(
    "health",
    rules.health,
    "ping",
    "how servers are probed: the effect-lb Ping, or a bare TCP connect (any TCP service)"
  ),
  maxConnections: setting(
    "max-connections",
    rules.maxConnections,
    Proxy.defaults.maxConnections,
    "proxy: client connections past this many are closed at once"
  ),
  connectTimeout: setting(
    "connect-timeout",
    rules.connectTimeout,
    Proxy.defaults.connectTimeout,
    "proxy: skip a backend that has not accepted in this long"
  ),
  proxyIdleTimeout: setting(
    "proxy-idle-timeout",
    rules.proxyIdleTimeout,
    Proxy.defaults.idleTimeout,
    "proxy: close a connection idle both ways this long"
  ),
  drainTimeout: setting(
    "drain-timeout",
    rules.drainTimeout,
    Proxy.defaults.drainTimeout,
    "proxy: on SIGINT/SIGTERM, let open connections finish this long (0: close them at once)"
  ),
  sendProxy: optional(
    "send-proxy",
    rules.sendProxy,
    "proxy: start each backend connection with a PROXY protocol header carrying the client's address",
    "off"
  ),
  acceptProxy: Options.boolean("accept-proxy").pipe(
    Options.withDescription(
      "proxy: each client connection must start with a PROXY protocol header (v1 or v2) within --connect-timeout; its address is the client's [default: off]"
    )
  ),
  adminPort: optionalPort("admin-port", "also serve the admin HTTP API, /metrics and the live dashboard on this port"),
  adminHost: setting(
    "admin-host",
    rules.host,
    Host.make(Admin.defaults.host),
    "address the admin server binds (it can change the rotation: keep it private)"
  ),
  idleTimeout: setting(
    "idle-timeout",
    rules.idleTimeout,
    ControlPlane.defaults.idleTimeout,
    "close a connection that has not registered after this long without a request"
  ),
  maxServers: setting(
    "max-servers",
    rules.maxServers,
    ServerRegistry.defaultConfig.maxServers,
    "servers known at once, at most: a Register past this is answered Busy"
  ),
  removeDeadAfter: setting(
    "remove-dead-after",
    rules.removeDeadAfter,
    Duration.decode(Reaper.defaults.removeDeadAfter),
    "remove a server that registered itself once it has been dead this long (--server ones stay)"
  ),
  slowStart: setting(
    "slow-start",
    rules.slowStart,
    Duration.zero,
    "a server that becomes live (new, or back from dead) ramps up from 10% to its full weight over this long (0: off)"
  ),
  ejectAfter: setting(
    "eject-after",
    rules.ejectAfter,
    passiveDefaults.ejectAfter,
    "passive health: eject a server after this many failures in a row seen in traffic (excluded by a client, proxied connect failed or reset; 0: off)"
  ),
  ejectTime: setting(
    "eject-time",
    rules.ejectTime,
    passiveDefaults.ejectTime,
    "passive health: how long the first ejection lasts; each repeat lasts one more of this (up to 10), each such time live without a failure forgives one"
  ),
  maxEjectedPercent: setting(
    "max-ejected-percent",
    rules.maxEjectedPercent,
    passiveDefaults.maxEjectedPercent,
    "passive health: never eject more than this percentage of the servers at once"
  ),
  ...certificateOptions("the balancer port and the proxy port (see --tls-listeners)"),
  tlsListeners: setting(
    "tls-listeners",
    rules.tlsListeners,
    allTlsListeners,
    "which listeners serve TLS with --tls-cert: balancer, proxy, or both"
  ),
  backendTls: Options.boolean("backend-tls").pipe(
    Options.withDescription(
      "the --server (and settings file) servers' ports speak TLS: probes and the proxy speak TLS to them (servers that register say so themselves) [default: off]"
    )
  ),
  backendCa: optional(
    "backend-ca",
    fileRule,
    "check the servers' certificates against the CA certificates in this file (PEM)",
    "the system's CAs"
  ),
  accessLog,
  token
}

/** Where the balancer listens, once it does: one line each, for a person (and for tests). */
const announce = Layer.effectDiscard(
  Effect.gen(function* () {
    const plane = yield* ControlPlane.ControlPlane
    const balancer = yield* Balancer.Balancer
    const registry = yield* ServerRegistry.ServerRegistry
    const servers = yield* registry.list
    const proxy = yield* Effect.serviceOption(Proxy.Proxy)
    if (Option.isSome(proxy)) yield* Console.log(`effect-lb proxy listening on ${formatEndpoint(proxy.value.address)}`)
    yield* Console.log(
      `effect-lb balancer listening on ${formatEndpoint(plane.address)}, strategy ${yield* balancer.strategy}, ` +
        `${servers.length} server${servers.length === 1 ? "" : "s"}`
    )
    const admin = yield* Effect.serviceOption(Admin.Admin)
    if (Option.isSome(admin))
      yield* Console.log(`effect-lb admin and dashboard on http://${formatEndpoint(admin.value.address)}/`)
  })
)

/** With `--registry`: this balancer announces itself to the cluster, where it listens, until it stops. */
export const joinCluster = Layer.scopedDiscard(
  Effect.gen(function* () {
    const cluster = yield* Effect.serviceOption(Cluster.Cluster)
    if (Option.isNone(cluster)) return
    const plane = yield* ControlPlane.ControlPlane
    const proxy = yield* Effect.serviceOption(Proxy.Proxy)
    const admin = yield* Effect.serviceOption(Admin.Admin)
    yield* cluster.value.announce({
      balancer: formatEndpoint(plane.address),
      ...(Option.isSome(proxy) ? { proxy: formatEndpoint(proxy.value.address) } : {}),
      ...(Option.isSome(admin) ? { admin: formatEndpoint(admin.value.address) } : {})
    })
  })
)

/** With `--config`, SIGHUP reloads the settings (certificates included). */
const hangups = Layer.scopedDiscard(
  Effect.flatMap(Effect.serviceOption(Reload.Reloader), (reloader) =>
    Option.isSome(reloader) ? reloadingOnHangup(reloader.value.reload) : Effect.void
  )
)

/** Without `--config`: with a certificate, SIGHUP reads it again; else SIGHUP is ignored (logged). */
const withoutConfig = (tls: BalancerTls) => {
  const listeners = [tls.balancer, tls.proxy].filter((listener): listener is ListenerTls => listener !== undefined)
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Option.isSome(tls.identity) && listeners.length > 0
      ? reloadingCertificatesOnHangup(listeners, tls.identity.value)(effect)
      : ignoringHangup(effect)
}

export const balancerCommand = Command.make("balancer", options, (flags) =>
  Effect.gen(function* () {
    const file = Option.isSome(flags.config) ? yield* loadConfig(flags.config.value) : {}
    const settings = settingsFrom(flags, file)
    const token = yield* checkedToken(settings.token)
    const tls = yield* startTls(settings.tls, settings.proxy !== undefined)
    const reload = Option.map(flags.config, (path) =>
      loadConfig(path).pipe(
        Effect.flatMap((next) => {
          const nextSettings = settingsFrom(flags, next)
          const desired = desiredFrom(nextSettings, settings, flags.servers.length === 0)
          return Effect.map(reloadTls(tls, nextSettings.tls), (install) => ({ ...desired, tls: install }))
        }),
        Effect.mapError((refused) => new Reload.ReloadFailed({ message: refused.message }))
      )
    )
    const balancer = balancerLayer({
      ...settings,
      monitor: { ...settings.monitor, backendTrust: tls.backendTrust },
      proxy:
        settings.proxy === undefined
          ? undefined
          : { ...settings.proxy, tls: tls.proxy, backendTrust: tls.backendTrust },
      balancerTls: tls.balancer,
      token,
      serversOrigin: Option.isSome(flags.config) && flags.servers.length === 0 ? "file" : "configured",
      reload: Option.getOrUndefined(reload),
      registry:
        settings.registry === undefined
          ? undefined
          : {
              store: {
                ...settings.registry,
                password: process.env[RedisStore.passwordVariable] || undefined,
                timeout: Duration.seconds(2)
              },
              balancerId: settings.registry.balancerId ?? defaultBalancerId(settings.port)
            }
    })
    yield* Layer.launch(Layer.mergeAll(announce, hangups, joinCluster).pipe(Layer.provide(balancer))).pipe(
      hintBusyPort([{ flag: "--port", port: settings.port, fallback: ControlPlane.defaults.port }]),
      Option.isSome(flags.config) ? (effect) => effect : withoutConfig(tls)
    )
  })
).pipe(Command.withDescription("run the balancer: hands clients the location of a server"))
