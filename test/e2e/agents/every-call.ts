// Agent: calls every BrokerService RPC once with plausible arguments and prints each status name.
// Used to prove that an identity the policy does not name is denied on every call.
import { Attribute, Prot } from "@vfio-broker/proto";
import { brokerClient, codeOf, print } from "./raw.js";

const socket = process.argv[2]!;
const c = brokerClient(socket);
const out: Record<string, string> = {};
async function attempt(name: string, fn: () => Promise<unknown>) {
  try {
    await fn();
    out[name] = "OK";
  } catch (e) {
    out[name] = codeOf(e);
  }
}
await attempt("Hello", () => c.hello({ clientName: "every-call" }));
await attempt("ListDevices", () => c.listDevices({}));
await attempt("GetDevice", () => c.getDevice({ deviceId: "sim0" }));
await attempt("OpenDevice", () => c.openDevice({ deviceId: "sim0" }));
await attempt("GetRegionInfo", () => c.getRegionInfo({ deviceFileId: 1n, regionIndex: 2 }));
await attempt("CreateMapping", () =>
  c.createMapping({
    deviceFileId: 1n,
    regionIndex: 2,
    offset: 0n,
    length: 4096n,
    attribute: Attribute.WC,
    prot: Prot.READ_WRITE,
  }),
);
await attempt("SetMappingAttribute", () =>
  c.setMappingAttribute({ deviceFileId: 1n, cookie: 1n, attribute: Attribute.UC }),
);
await attempt("ReleaseMapping", () => c.releaseMapping({ deviceFileId: 1n, cookie: 1n }));
await attempt("CloseDevice", () => c.closeDevice({ deviceFileId: 1n }));
await attempt("ReadRegion", () => c.readRegion({ deviceFileId: 1n, offset: 0n, length: 4 }));
await attempt("WriteRegion", () => c.writeRegion({ deviceFileId: 1n, offset: 0n, data: new Uint8Array(4) }));
await attempt(
  "Lease",
  () =>
    new Promise((resolve, reject) => {
      const { call } = c.lease();
      call.on("data", resolve);
      call.on("error", reject);
      call.on("end", () => resolve(undefined));
    }),
);
print(out);
c.close();
