// The vfio-broker API (package vfiobroker.v1): generated message schemas and service descriptors,
// plus the grpc-js bridge. The .proto files beside this package are the contract; this is built.
export * from "./grpc.js";
export * from "./messages.js";
