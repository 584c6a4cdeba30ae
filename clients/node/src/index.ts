// @vfio-broker/client: the Node.js client library for brokerd. connect() -> BrokerClient ->
// open() -> DeviceFile -> map() -> Mapping (mmap'd MMIO with typed accessors). See README in
// clients/ and the `vfio-broker` CLI (cli.ts) for a worked example of every call.
export type { Capabilities, Identity } from "./capabilities.js";
export { BrokerClient } from "./client.js";
export { connect } from "./connect.js";
export { type ConnectOptions, DEFAULT_SOCKET } from "./connect-options.js";
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
export { DeviceFile } from "./device-file.js";
export {
  BrokerClientError,
  FdChannelError,
  grpcCodeName,
  MappingGoneError,
  toClientError,
} from "./errors.js";
export type { BrokerClientEvents, DeviceHealthEvent, LeaseLostEvent, RevocationEvent } from "./events.js";
export { type FetchedFd, type FetchFdOptions, fdStatusName, fetchFd } from "./fd-channel.js";
export type { MapOptions, MapSpec } from "./map-request.js";
export { Mapping } from "./mapping.js";
export type { Transport } from "./workload-connect.js";
