/**
 * The architecture, checked on every `npm test` (`npm run deps`): no import cycles, and data flows
 * one way — programs -> services -> domain; inside services each role (balancer, server, client)
 * leans on the shared wire/ and the domain, never on another role; a strategy sees only what
 * strategies share and the domain.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-cycles",
      severity: "error",
      comment: "An import cycle: modules that cannot be read, tested or loaded one before the other.",
      from: {},
      to: { circular: true }
    },
    {
      name: "domain-is-values",
      severity: "error",
      comment: "src/domain holds values and messages only: it imports no service and no program.",
      from: { path: "^src/domain/" },
      to: { path: "^src/(services|programs)/" }
    },
    {
      name: "services-below-programs",
      severity: "error",
      comment: "Programs wire services together; a service never reaches up into a program.",
      from: { path: "^src/services/" },
      to: { path: "^src/programs/" }
    },
    {
      name: "wire-is-shared",
      severity: "error",
      comment: "wire/ is what every role stands on: it knows none of them.",
      from: { path: "^src/services/wire/" },
      to: { path: "^src/services/(balancer|server|client)/" }
    },
    {
      name: "roles-apart",
      severity: "error",
      comment: "The balancer, the backend server and the client are separate processes: no role imports another.",
      from: { path: "^src/services/(balancer|server|client)/" },
      to: { path: "^src/services/(balancer|server|client)/", pathNot: "^src/services/$1/" }
    },
    {
      name: "strategies-see-only-candidates",
      severity: "error",
      comment: "A strategy sees the servers it is given, never the registry, the balancer or a socket.",
      from: { path: "^src/services/balancer/strategies/" },
      to: { path: "^src/services/", pathNot: "^src/services/balancer/strategies/" }
    },
    {
      name: "no-unresolvable",
      severity: "error",
      comment: "An import that resolves to nothing.",
      from: {},
      to: { couldNotResolve: true }
    }
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(node_modules|dist)/" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"] }
  }
}
