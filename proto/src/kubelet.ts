// The kubelet's APIs that the node agent (services/k8s) serves or calls: DRA plugin (dra/v1),
// plugin registration, device plugin (v1beta1). Generated code is in gen/; this file only
// re-exports it, one namespace per API (their message names overlap).
export * as dra from "./gen/k8s/io/kubelet/pkg/apis/dra/v1/api_pb.js";
export * as pluginregistration from "./gen/pluginregistration/api_pb.js";
export * as deviceplugin from "./gen/v1beta1/deviceplugin_pb.js";
