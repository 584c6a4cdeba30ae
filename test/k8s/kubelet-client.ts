// The kubelet's side of the node agent's sockets, for the tests: gRPC clients (and the kubelet's
// device plugin Registration server) built at run time by @grpc/proto-loader from the kubelet API
// definitions in test/k8s/kubelet-api/, not from the agent's generated code. Promise wrappers only.
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";
import { REPO } from "../lib/brokerd.js";

const API = join(REPO, "test/k8s/kubelet-api");
// keepCase: field names exactly as in the .proto (cdi_device_ids), as a kubelet's decoder sees them.
const OPTS: loader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

type Ctor = new (target: string, creds: grpc.ChannelCredentials) => grpc.Client;

function load(file: string): grpc.GrpcObject {
  return grpc.loadPackageDefinition(loader.loadSync(join(API, file), OPTS));
}

function lookup(obj: grpc.GrpcObject, path: string): grpc.GrpcObject[string] {
  let cur: unknown = obj;
  for (const p of path.split(".")) cur = (cur as Record<string, unknown>)[p];
  if (!cur) throw new Error(`${path} is not in the kubelet API definitions`);
  return cur as grpc.GrpcObject[string];
}

export const draApi = load("dra/v1/api.proto");
export const registrationApi = load("pluginregistration/v1/api.proto");
export const devicePluginApi = load("deviceplugin/v1beta1/api.proto");

export interface Unary {
  <T = Record<string, unknown>>(method: string, req: unknown): Promise<T>;
  client: grpc.Client;
}

/** A client of `service` (e.g. "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin") on a Unix socket. */
export function kubeletClient(api: grpc.GrpcObject, service: string, socket: string): Unary {
  const C = lookup(api, service) as unknown as Ctor;
  const client = new C(`unix:${socket}`, grpc.credentials.createInsecure()) as grpc.Client &
    Record<string, (req: unknown, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void>;
  const call = (<T>(method: string, req: unknown) =>
    new Promise<T>((resolve, reject) =>
      client[method]!(req, (e, r) => (e ? reject(e) : resolve(r as T))),
    )) as Unary;
  call.client = client;
  return call;
}

/** The service definition (for a server the test plays, e.g. the kubelet's Registration). */
export function serviceOf(api: grpc.GrpcObject, service: string): grpc.ServiceDefinition {
  return (lookup(api, service) as unknown as { service: grpc.ServiceDefinition }).service;
}
