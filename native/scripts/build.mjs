// Builds the Node-API addon with node-gyp against the headers of the Node that runs this script.
// It never downloads headers (the build machines have no network beyond the registries): if the
// headers are missing it fails loudly and says how to fix it.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const nodedir = process.env.npm_config_nodedir || dirname(dirname(process.execPath));
if (!existsSync(join(nodedir, "include", "node", "node_api.h"))) {
  console.error(
    `native: Node headers not found under ${nodedir}/include/node.\n` +
      "  Install them (Debian: apt-get install nodejs-dev / libnode-dev, or use a Node tarball that ships include/),\n" +
      "  or point npm_config_nodedir at a directory containing include/node/node_api.h.",
  );
  process.exit(1);
}
const require = createRequire(import.meta.url);
let gyp;
try {
  gyp = require.resolve("node-gyp/bin/node-gyp.js");
} catch {
  console.error("native: node-gyp is not installed; run `npm ci` at the repository root first.");
  process.exit(1);
}
const r = spawnSync(process.execPath, [gyp, "rebuild", `--nodedir=${nodedir}`, "--jobs=max"], {
  cwd: here,
  stdio: "inherit",
});
if (r.status !== 0) {
  console.error(
    "native: the addon failed to build (see the compiler output above); it needs g++, make and python3.",
  );
  process.exit(r.status ?? 1);
}
