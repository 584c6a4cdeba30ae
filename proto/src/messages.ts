// The vfio-broker API's generated message schemas and service descriptors, without the grpc-js
// bridge: what a client on the workload protocol needs, importable without loading grpc-js
// (index.ts adds grpc.ts). Generated code is in gen/; this file only re-exports it.
export * from "./gen/grpc/health/v1/health_pb.js";
export * from "./gen/vfiobroker/v1/admin_pb.js";
export * from "./gen/vfiobroker/v1/broker_pb.js";
export * from "./gen/vfiobroker/v1/fdchannel_pb.js";
export * from "./gen/vfiobroker/v1/types_pb.js";
export * from "./gen/vfiobroker/v1/workload_pb.js";
