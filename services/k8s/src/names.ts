// The node agent's fixed names and bounds: the DRA driver name, the CDI kinds, what a claim and
// a request may hold. Pure constants and validators; no I/O. Every bound here is enforced where the
// value enters (claims from the kubelet, objects from the API server).

/** The DRA driver name (ResourceSlice spec.driver, allocation results' driver). */
export const DRIVER = "vfio-broker.io";
/** The CDI kind of the per-claim transient specs the DRA plugin writes. */
export const CLAIM_CDI_KIND = "vfio-broker.io/claim";
/** The CDI kind of the per-device specs the device plugin writes. */
export const DEVICE_CDI_KIND = "vfio-broker.io/device";
/** The service the DRA socket serves, as listed in the registration's supported_versions. */
export const DRA_SERVICE_VERSION = "v1.DRAPlugin";
/** Where the workload socket directory appears inside a container, and the socket a client uses. */
export const CONTAINER_SOCKET_DIR = "/run/vfio-broker";
export const CONTAINER_SOCKET = `${CONTAINER_SOCKET_DIR}/broker.sock`;

/** Claims in one NodePrepareResources / NodeUnprepareResources call. */
export const MAX_CLAIMS_PER_CALL = 128;
/** Claims prepared on this node at once (brokerd binds at most as many). */
export const MAX_PREPARED_CLAIMS = 1024;
/** Devices one claim may be allocated (the API server's limit on allocation results). */
export const MAX_DEVICES_PER_CLAIM = 32;
/** Pods one claim may be reserved for (the API server's limit on reservedFor). */
export const MAX_PODS_PER_CLAIM = 256;
/** Bytes of one API server response the agent reads. */
export const MAX_API_RESPONSE_BYTES = 4 * 1024 * 1024;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function isUid(s: string): boolean {
  return UUID.test(s);
}

export function isDnsLabel(s: string): boolean {
  return DNS_LABEL.test(s);
}

export function isDnsSubdomain(s: string): boolean {
  return s.length <= 253 && DNS_SUBDOMAIN.test(s);
}

/** Why a kubelet-supplied claim reference is unusable, or "" when it is well formed. */
export function claimRefError(c: { namespace: string; uid: string; name: string }): string {
  if (!isUid(c.uid)) return `claim uid ${JSON.stringify(c.uid.slice(0, 64))} is not a UUID`;
  if (!isDnsLabel(c.namespace))
    return `namespace ${JSON.stringify(c.namespace.slice(0, 64))} is not a DNS label`;
  if (!isDnsSubdomain(c.name))
    return `claim name ${JSON.stringify(c.name.slice(0, 64))} is not a DNS subdomain`;
  return "";
}
