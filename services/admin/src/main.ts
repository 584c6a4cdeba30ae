#!/usr/bin/env node
// vfio-broker-admin's entry point: parse the configuration, load (or create) the token, connect
// to brokerd's admin socket and serve the REST API and the console. It starts even when brokerd
// is down (the API answers 503 and the console says so until brokerd is back). Prints one JSON
// line {"event":"ready",...} on stdout when listening; SIGTERM/SIGINT close it.
import { fileURLToPath } from "node:url";
import { UnsafePlaceError } from "@vfio-broker/native";
import { buildApp } from "./app.js";
import { connectBrokerd } from "./brokerd.js";
import { ConfigError, HELP, parseConfig } from "./config.js";
import { isLoopbackListen } from "./guard/hosts.js";
import { loadOrCreateToken } from "./token.js";

const PUBLIC_DIR = fileURLToPath(new URL("../public/", import.meta.url));

async function main(): Promise<void> {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`vfio-broker-admin: ${e.message}`);
    process.exit(2);
  }
  if (config === "help") {
    console.log(HELP);
    return;
  }
  let token: { token: string; created: boolean };
  try {
    token = loadOrCreateToken(config.tokenFile);
  } catch (e) {
    console.error(`vfio-broker-admin: token file ${config.tokenFile}: ${(e as Error).message}`);
    // A token file or directory someone else could change is a configuration to fix (exit 2).
    process.exit(e instanceof UnsafePlaceError ? 2 : 1);
  }
  // parseConfig refused a non-loopback address without --allow-remote; with it, say what it costs.
  if (!isLoopbackListen(config.host))
    console.error(
      `vfio-broker-admin: warning: --allow-remote: listening on ${config.host}, not loopback. The API and ` +
        "console are reachable from the network over plain HTTP: the admin token crosses it in clear text, " +
        "and whoever reads it can drain devices, revoke sessions and reload the policy. Put a TLS proxy in " +
        "front or firewall the port; browsers may use only the names in --allowed-host or this address",
    );

  const brokerd = connectBrokerd(config.adminSocket);
  const app = await buildApp({
    brokerd,
    token: token.token,
    tokenFile: config.tokenFile,
    publicDir: PUBLIC_DIR,
    allowedHosts: config.allowedHosts,
    logger: config.log,
    loopback: isLoopbackListen(config.host),
  });
  // A deep accept queue (the kernel caps it at somaxconn): a local user flooding connect() must
  // not fill it before the console gets to turn its connections away.
  await app.listen({ host: config.host, port: config.port, backlog: 4096 });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.port;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  console.error(
    `vfio-broker-admin: console at http://${host}:${port}/ ; token ${token.created ? "created in" : "read from"} ${config.tokenFile}`,
  );
  console.log(
    JSON.stringify({
      event: "ready",
      url: `http://${host}:${port}/`,
      tokenFile: config.tokenFile,
      adminSocket: config.adminSocket,
      pid: process.pid,
    }),
  );
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void app.close().then(() => {
      brokerd.close();
      process.exit(0);
    });
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error(`vfio-broker-admin: ${e instanceof Error ? (e.stack ?? e.message) : e}`);
  process.exit(1);
});
