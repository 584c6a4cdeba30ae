// Debian's Chromium, driven by playwright-core, the way the console and browser-attack tests need
// it: headless, no sandbox (tests run as root), none of the background traffic a fresh profile
// starts (there is no network here).
import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

/** Fails (never skips) when Chromium is not installed: these tests need a real browser. */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `${CHROMIUM} is missing; install it: apt-get install -y --no-install-recommends chromium`,
    );
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      ...extraArgs,
    ],
    headless: true,
  });
}
