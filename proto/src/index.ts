// The vfio-broker API (package vfiobroker.v1): generated message schemas and service descriptors,
// plus the grpc-js bridge. The .proto files beside this package are the contract; this is built.
export * from "./gen/grpc/health/v1/health_pb.js";
export * from "./gen/vfiobroker/v1/admin_pb.js";
export * from "./gen/vfiobroker/v1/broker_pb.js";
export * from "./gen/vfiobroker/v1/fdchannel_pb.js";
export * from "./gen/vfiobroker/v1/types_pb.js";
export * from "./gen/vfiobroker/v1/workload_pb.js";
export * from "./grpc.js";
