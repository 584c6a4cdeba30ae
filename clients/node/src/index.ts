// @vfio-broker/client: the Node.js client library for brokerd. connect() -> BrokerClient ->
// open() -> DeviceFile -> map() -> Mapping (mmap'd MMIO with typed accessors). See README in
// clients/ and the `vfio-broker` CLI (cli.ts) for a worked example of every call.
export {
  BrokerClient,
  type BrokerClientEvents,
  type Capabilities,
  type ConnectOptions,
  connect,
  DEFAULT_SOCKET,
  type DeviceHealthEvent,
  type Identity,
  type LeaseLostEvent,
  type RevocationEvent,
} from "./client.js";
export type {
  AttributeName,
  BackingName,
  DeviceFileRegion,
  DeviceInfo,
  HealthName,
  LayoutName,
  ProtName,
  RegionInfo,
} from "./convert.js";
export { findRegion } from "./convert.js";
export { DeviceFile, type MapOptions, type MapSpec } from "./device-file.js";
export {
  BrokerClientError,
  FdChannelError,
  grpcCodeName,
  MappingGoneError,
  toClientError,
} from "./errors.js";
export { type FetchedFd, type FetchFdOptions, fdStatusName, fetchFd } from "./fd-channel.js";
export { Mapping } from "./mapping.js";
export type { Transport } from "./workload-connect.js";
