#!/usr/bin/env node
// brokerd's entry point: parse the configuration, start the daemon, and handle the process:
// SIGHUP reloads the policy (a bad file keeps the old one and logs why), SIGTERM/SIGINT drain and
// exit, READY=1 goes to systemd when NOTIFY_SOCKET is set.
import { sdNotify, UnsafePlaceError } from "@vfio-broker/native";
import { HELP, parseConfig } from "./config.js";
import { startDaemon } from "./daemon.js";
import { BrokerError } from "./errors.js";
import { nofileLimit } from "./fd-budget.js";
import { logLimited } from "./log.js";
import { startMetrics } from "./metrics.js";
import { PolicyError } from "./policy/index.js";
import { HandoverError } from "./restart/handover.js";
import { StateError } from "./state/store.js";

async function main(): Promise<void> {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (e) {
    console.error(`vfio-brokerd: ${(e as Error).message}`);
    process.exit(2);
  }
  if (config === "help") {
    console.log(HELP);
    return;
  }
  // SIGHUP's default action ends the process: a handler is in place from the start (a SIGHUP while
  // starting changes nothing, the policy and journal are being opened fresh anyway), and the
  // reload one before anyone is told brokerd is ready (a SIGHUP sent the moment "ready" is read
  // ended brokerd about half the time on this VM).
  let onHup = () => {};
  process.on("SIGHUP", () => onHup());
  const daemon = await startDaemon(config, { metrics: startMetrics });
  // SIGHUP: re-read the policy and reopen the journal (logrotate moves it, then signals us).
  // Neither may throw here: an exception in a signal handler would end brokerd. The journal keeps
  // its old fd (or drops and counts lines) when the reopen fails, and says so on stderr.
  onHup = () => {
    try {
      daemon.reopenJournal();
    } catch (e) {
      logLimited("sighup.journal", `vfio-brokerd: reopening the journal failed: ${(e as Error).message}`);
    }
    const r = daemon.reloadPolicy();
    console.error(
      r.ok
        ? "vfio-brokerd: policy reloaded"
        : `vfio-brokerd: policy NOT reloaded, keeping the old one:\n  ${r.errors.join("\n  ")}`,
    );
  };
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    sdNotify("STOPPING=1");
    console.error(`vfio-brokerd: ${sig}: draining`);
    void daemon.close(sig, config.onStop === "keep").then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  const devices = daemon.broker.allDevices().map((d) => d.info.id);
  console.log(
    JSON.stringify({
      event: "ready",
      socket: config.socket,
      fdSocket: config.fdSocket,
      adminSocket: config.adminSocket,
      metrics: config.metrics,
      policy: config.policy,
      devices,
      pid: process.pid,
      // What clients may make brokerd hold, fitted under this RLIMIT_NOFILE (fd-budget.ts).
      caps: { nofile: nofileLimit(), ...daemon.budget.caps, clientFds: daemon.budget.clientFds },
    }),
  );
  if (devices.length === 0)
    console.error(
      "vfio-brokerd: warning: no device to serve (--no-sim, and no --sysfs or --vfio function); under systemd name them in /etc/vfio-broker/brokerd.env (VFIO_BROKER_SYSFS=, VFIO_BROKER_VFIO=)",
    );
  sdNotify(`READY=1\nSTATUS=serving ${devices.length} devices\nMAINPID=${process.pid}`);
}

main().catch((e) => {
  // A directory or file someone else could change: a configuration to fix, like a bad flag.
  if (e instanceof UnsafePlaceError) {
    console.error(`vfio-brokerd: refusing to start: ${e.message}`);
    process.exit(2);
  }
  if (e instanceof PolicyError)
    console.error(`vfio-brokerd: the policy is invalid:\n  ${e.errors.join("\n  ")}`);
  // Errors written for an operator (a refusal, a damaged state store, a failed take-over): the
  // message says what to do; a stack trace would only bury it.
  else if (e instanceof BrokerError || e instanceof StateError || e instanceof HandoverError)
    console.error(`vfio-brokerd: ${e.message}`);
  else console.error(`vfio-brokerd: ${e instanceof Error ? (e.stack ?? e.message) : e}`);
  process.exit(1);
});
