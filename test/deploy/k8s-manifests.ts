// Offline checks of Kubernetes manifests, for test/deploy/kubernetes.test.ts. kustomize() is a
// tiny `kubectl kustomize` for what deploy/kubernetes uses (resources + namespace; any other key
// is refused, so the emulation cannot silently drift). strictCheck() holds each resource to the
// Kubernetes API types of the npm package kubernetes-models (generated from the OpenAPI
// definitions): its runtime validate() checks types, formats and required fields but accepts
// unknown fields, so the same objects are also type-checked as TypeScript object literals, whose
// excess-property check rejects any field the API does not have (a misspelled `hostPid`) at
// any depth.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseAllDocuments } from "yaml";
import { REPO } from "../lib/brokerd.js";

export interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}
export interface Built {
  /** where each resource came from, for messages */
  source: string;
  resource: Resource;
}

export const CLUSTER_SCOPED_KINDS = [
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "PriorityClass",
  "DeviceClass",
  "ValidatingAdmissionPolicy",
  "ValidatingAdmissionPolicyBinding",
];
const CLUSTER_SCOPED = new Set(CLUSTER_SCOPED_KINDS);
const KUSTOMIZATION_KEYS = new Set(["apiVersion", "kind", "namespace", "resources"]);

export function readYaml(file: string): unknown[] {
  return parseAllDocuments(readFileSync(file, "utf8")).map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0]!.message}`);
    return d.toJS();
  });
}

/** The resources of dir/kustomization.yaml, with its namespace applied. */
export function kustomize(dir: string): Built[] {
  const [k] = readYaml(join(dir, "kustomization.yaml")) as Record<string, unknown>[];
  if (!k) throw new Error(`${dir}/kustomization.yaml is empty`);
  for (const key of Object.keys(k))
    if (!KUSTOMIZATION_KEYS.has(key))
      throw new Error(
        `kustomization.yaml: "${key}" is not emulated here; extend test/deploy/k8s-manifests.ts`,
      );
  const out: Built[] = [];
  for (const file of k.resources as string[])
    for (const doc of readYaml(join(dir, file)) as Resource[]) {
      if (doc === null) continue;
      if (typeof k.namespace === "string" && !CLUSTER_SCOPED.has(doc.kind))
        doc.metadata = { ...doc.metadata, namespace: k.namespace };
      out.push({ source: `${file} (${doc.kind} ${doc.metadata?.name})`, resource: doc });
    }
  return out;
}

/** Every problem found, as "source: message" lines; [] when all resources are valid. */
export async function strictCheck(items: Built[]): Promise<string[]> {
  const problems: string[] = [];
  // 1. kubernetes-models' own validation (types, formats, required fields).
  for (const { source, resource } of items) {
    const mod = await import(`kubernetes-models/${resource.apiVersion}/${resource.kind}`).catch(
      () => undefined,
    );
    const Model = mod?.[resource.kind];
    if (!Model) {
      problems.push(`${source}: ${resource.apiVersion} ${resource.kind} is not a Kubernetes API type`);
      continue;
    }
    try {
      new Model(resource).validate();
    } catch (e) {
      problems.push(`${source}: ${(e as Error).message}`);
    }
  }
  // 2. Unknown fields: the TypeScript compiler's excess-property check against the same types.
  const dir = join(REPO, "test-output", `k8s-strict-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  try {
    const files = items.map(({ source, resource }, i) => {
      const name = `r${i}.ts`;
      writeFileSync(
        join(dir, name),
        `// ${source}\nimport type { I${resource.kind} } from "kubernetes-models/${resource.apiVersion}/${resource.kind}";\n` +
          `export const resource: I${resource.kind} = ${JSON.stringify(resource, null, 2)};\n`,
      );
      return { name, source };
    });
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: "nodenext",
          moduleResolution: "nodenext",
          skipLibCheck: true,
          types: [],
        },
        files: files.map((f) => f.name),
      }),
    );
    const tsc = join(REPO, "node_modules/typescript/bin/tsc");
    const r = spawnSync(process.execPath, [tsc, "-p", join(dir, "tsconfig.json"), "--pretty", "false"], {
      encoding: "utf8",
      cwd: dirname(dir),
    });
    for (const line of `${r.stdout}${r.stderr}`.split("\n").filter((l) => l.includes("error TS"))) {
      const name = /(r\d+\.ts)\(/.exec(line)?.[1];
      const f = files.find((x) => x.name === name);
      problems.push(`${f?.source ?? "?"}: ${line.replace(/^.*?error /, "")}`);
    }
    if (r.status !== 0 && problems.length === 0) problems.push(`tsc failed: ${r.stdout}${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return problems;
}
