// Client-supplied strings: the one table of how long each may be and which characters it may hold,
// and the one check every BrokerService handler and the fd channel run on a request before
// anything else looks at it. A string over its limit, or with a character its kind does not
// allow, is INVALID_ARGUMENT (the fd channel: FD_STATUS_BAD_REQUEST) naming the field and the
// limit, so nothing a client sends can make brokerd keep, store or journal more than the limits
// below. The limits are written next to each field in the .proto files (rpc/strings.test.ts checks
// that they agree). Pure: no I/O, no state.
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { createRegistry, ScalarType } from "@bufbuild/protobuf";
import {
  file_vfiobroker_v1_broker,
  file_vfiobroker_v1_fdchannel,
  file_vfiobroker_v1_types,
  file_vfiobroker_v1_workload,
} from "@vfio-broker/proto";
import { invalid } from "../errors.js";

/** What characters a kind of string may hold. */
export type StringKind = "hex" | "id" | "text";

export interface StringLimit {
  /** Most UTF-8 bytes. */
  max: number;
  kind: StringKind;
}

// The kinds: hex, lower-case hex digits (tickets, tokens, session ids brokerd generated); id,
// letters, digits and `. _ : -` (ids a client chooses or names: UUIDs, "sim0", "0000:3b:00.1");
// text, anything but what NOT_TEXT lists.

/**
 * What free text may not hold: control characters (C0, DEL, C1), format characters (bidi
 * overrides and isolates, zero-width characters, the BOM), line and paragraph separators, lone
 * surrogates and private-use characters. Anything a terminal, a log reader or the console would
 * show differently from what it is.
 */
const NOT_TEXT = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}]/u;

const KIND_RULE: Record<StringKind, string> = {
  hex: "lower-case hex digits (0-9, a-f) only",
  id: "letters, digits and . _ : - only",
  text: "text without control, format (bidi, zero-width) or line-separator characters",
};

/**
 * Every string field a client sends, by "Message.field" (the .proto names). A string field of a
 * request message that is not listed here gets DEFAULT_LIMIT (and rpc/strings.test.ts fails until
 * it is listed, with its limit written in the .proto).
 */
export const STRING_LIMITS: Readonly<Record<string, StringLimit>> = Object.freeze({
  "vfiobroker.v1.HelloRequest.client_name": { max: 128, kind: "text" },
  "vfiobroker.v1.HelloRequest.client_version": { max: 64, kind: "text" },
  "vfiobroker.v1.HelloRequest.resume_token": { max: 32, kind: "hex" },
  "vfiobroker.v1.GetDeviceRequest.device_id": { max: 64, kind: "id" },
  "vfiobroker.v1.OpenDeviceRequest.device_id": { max: 64, kind: "id" },
  "vfiobroker.v1.OpenDeviceRequest.request_id": { max: 64, kind: "id" },
  "vfiobroker.v1.CreateMappingRequest.request_id": { max: 64, kind: "id" },
  "vfiobroker.v1.FdRequest.ticket": { max: 32, kind: "hex" },
  "vfiobroker.v1.FdBatch.session_token": { max: 32, kind: "hex" },
  "vfiobroker.v1.FdGrant.session_token": { max: 32, kind: "hex" },
  "vfiobroker.v1.FdGrant.request_id": { max: 64, kind: "id" },
  "vfiobroker.v1.FdRelease.session_token": { max: 32, kind: "hex" },
  "vfiobroker.v1.WorkloadHello.capabilities": { max: 32, kind: "id" },
  "vfiobroker.v1.WorkloadHello.client_name": { max: 128, kind: "text" },
  "vfiobroker.v1.WorkloadHello.resume_token": { max: 32, kind: "hex" },
  "vfiobroker.v1.WorkloadOpenDevice.device_id": { max: 64, kind: "id" },
  "vfiobroker.v1.WorkloadOpenDevice.request_id": { max: 64, kind: "id" },
});

/** The call metadata naming the session a client expects (broker-service.ts SESSION_METADATA). */
export const SESSION_METADATA_LIMIT: StringLimit = { max: 32, kind: "hex" };

/** For a string field nobody listed: generous, but still a bound. */
export const DEFAULT_LIMIT: StringLimit = { max: 256, kind: "text" };

/** The request messages whose strings come from clients (BrokerService inputs, FdRequest, WorkloadRequest). */
export const registry = createRegistry(
  file_vfiobroker_v1_types,
  file_vfiobroker_v1_broker,
  file_vfiobroker_v1_fdchannel,
  file_vfiobroker_v1_workload,
);

/** Why `value` breaks `limit`, or "" when it does not. */
export function stringProblem(value: string, limit: StringLimit): string {
  // A UTF-16 unit is at least one UTF-8 byte: the cheap test first, the exact count if needed.
  if (value.length > limit.max || (limit.kind === "text" && Buffer.byteLength(value) > limit.max))
    return `is ${Buffer.byteLength(value)} bytes long; at most ${limit.max} bytes are allowed`;
  const bad = limit.kind === "hex" ? /[^0-9a-f]/u : limit.kind === "id" ? /[^A-Za-z0-9._:-]/u : NOT_TEXT;
  const m = bad.exec(value);
  if (!m) return "";
  const cp = m[0].codePointAt(0)!;
  const shown =
    cp >= 0x21 && cp <= 0x7e ? `"${m[0]}"` : `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
  return `holds ${shown} at offset ${m.index}; it may hold ${KIND_RULE[limit.kind]}, at most ${limit.max} ${limit.kind === "text" ? "bytes" : "characters"}`;
}

/** INVALID_ARGUMENT naming the field when value breaks limit. */
export function checkString(field: string, value: string, limit: StringLimit): void {
  const p = stringProblem(value, limit);
  if (p !== "")
    throw invalid(
      `${field} ${p}`,
      `string:${field
        .split(".")
        .pop()!
        .replace(/\[\d+\]$/, "")}`,
    );
}

/** limitOf's answers by field (the registry's descriptors are fixed: at most one entry each). */
const LIMIT_OF = new WeakMap<DescField, StringLimit>();

/** The limit of one field of a message. */
export function limitOf(message: DescMessage, field: DescField): StringLimit {
  let limit = LIMIT_OF.get(field);
  if (limit === undefined) {
    limit = STRING_LIMITS[`${message.typeName}.${field.name}`] ?? DEFAULT_LIMIT;
    LIMIT_OF.set(field, limit);
  }
  return limit;
}

/**
 * Checks every string in a decoded request (nested messages and lists included) against its
 * limit; throws INVALID_ARGUMENT for the first that breaks one, named by its path
 * ("FdRequest.batch.grants[3].request_id"). A message type brokerd does not know is let through
 * (nothing of it is kept).
 */
export function checkStrings(msg: { $typeName: string }): void {
  const desc = registry.getMessage(msg.$typeName);
  if (desc) walk(desc, msg as unknown as Record<string, unknown>, desc.name);
}

function fieldValue(field: DescField, msg: Record<string, unknown>): unknown {
  if (field.oneof) {
    const o = msg[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
    return o?.case === field.localName ? o.value : undefined;
  }
  return msg[field.localName];
}

function walk(desc: DescMessage, msg: Record<string, unknown>, path: string): void {
  for (const field of desc.fields) {
    const v = fieldValue(field, msg);
    if (v === undefined || v === null) continue;
    if (field.fieldKind === "scalar") {
      // The common case, without building the field's path unless it is needed for the error.
      if (field.scalar !== ScalarType.STRING) continue;
      const limit = limitOf(desc, field);
      if (stringProblem(v as string, limit) !== "") checkString(`${path}.${field.name}`, v as string, limit);
      continue;
    }
    const at = `${path}.${field.name}`;
    switch (field.fieldKind) {
      case "message":
        walk(field.message, v as Record<string, unknown>, at);
        break;
      case "list":
        (v as unknown[]).forEach((item, i) => {
          if (field.listKind === "message")
            walk(field.message, item as Record<string, unknown>, `${at}[${i}]`);
          else if (field.listKind === "scalar" && field.scalar === ScalarType.STRING)
            checkString(`${at}[${i}]`, item as string, limitOf(desc, field));
        });
        break;
      case "map":
        for (const [k, item] of Object.entries(v as Record<string, unknown>)) {
          if (field.mapKey === ScalarType.STRING) checkString(`${at} key`, k, limitOf(desc, field));
          if (field.mapKind === "message")
            walk(field.message, item as Record<string, unknown>, `${at}[${k}]`);
          else if (field.mapKind === "scalar" && field.scalar === ScalarType.STRING)
            checkString(`${at}[${k}]`, item as string, limitOf(desc, field));
        }
        break;
      default:
        break;
    }
  }
}
