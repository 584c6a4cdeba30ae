// @vfio-broker/admin: the unprivileged REST API and web console over brokerd's AdminService.
// buildApp() is the fastify application (tests and embedders); main.ts is the service entry point.
export { type AppOptions, buildApp, VERSION } from "./app.js";
export { type AdminClient, type Brokerd, connectBrokerd, HttpError } from "./brokerd.js";
export { type AdminConfig, HELP, parseConfig } from "./config.js";
export { defaultTokenFile, loadOrCreateToken, tokenMatches } from "./token.js";
