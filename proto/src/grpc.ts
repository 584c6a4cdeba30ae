// Bridges protoc-gen-es (v2) service descriptors to @grpc/grpc-js: a ServiceDefinition for servers
// and a typed Promise client. protoc-gen-es generates only schemas and descriptors; grpc-js needs
// serializers per method, which we derive here once for every service instead of generating code.
import type {
  DescMessage,
  DescMethod,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

type AnyMethod = DescMethod & { input: DescMessage; output: DescMessage };

function isClientStreaming(m: DescMethod): boolean {
  return m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming";
}

function isServerStreaming(m: DescMethod): boolean {
  return m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming";
}

/**
 * What a server's request deserializer returns for bytes that are not a valid request protobuf.
 * grpc-js answers a throwing deserializer with INTERNAL; the API promises INVALID_ARGUMENT, so the
 * deserializer hands this value to the handler instead, and the handler answers (see isUndecodable).
 */
export class UndecodableRequest {
  constructor(
    readonly typeName: string,
    readonly reason: string,
  ) {}

  get message(): string {
    return `the request is not a valid ${this.typeName} protobuf (${this.reason.slice(0, 120)}); send the message the .proto defines`;
  }
}

export function isUndecodable(req: unknown): req is UndecodableRequest {
  return req instanceof UndecodableRequest;
}

/** The grpc-js ServiceDefinition of a protobuf-es service, keyed by the methods' localName. */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods as AnyMethod[]) {
    def[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream: isClientStreaming(method),
      responseStream: isServerStreaming(method),
      requestSerialize: (m: unknown) =>
        Buffer.from(toBinary(method.input, create(method.input, m as MessageInitShape<DescMessage>))),
      requestDeserialize: (b: Buffer) => {
        try {
          return fromBinary(method.input, b);
        } catch (e) {
          return new UndecodableRequest(method.input.typeName, e instanceof Error ? e.message : String(e));
        }
      },
      responseSerialize: (m: unknown) =>
        Buffer.from(toBinary(method.output, create(method.output, m as MessageInitShape<DescMessage>))),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
    };
  }
  return def;
}

type Methods<S extends DescService> = S extends { method: infer M } ? M : never;
type In<M> = M extends { input: infer I extends DescMessage } ? I : never;
type Out<M> = M extends { output: infer O extends DescMessage } ? O : never;

export interface CallOptions {
  /** Deadline in milliseconds from now. */
  timeoutMs?: number;
  metadata?: grpc.Metadata;
}

/** A bidi stream call with typed messages. */
export interface BidiStream<I extends DescMessage, O extends DescMessage> {
  call: grpc.ClientDuplexStream<MessageShape<I>, MessageShape<O>>;
  send(m: MessageInitShape<I>): void;
}

export type PromiseClient<S extends DescService> = {
  [K in keyof Methods<S>]: Methods<S>[K] extends { methodKind: "unary" }
    ? (
        req: MessageInitShape<In<Methods<S>[K]>>,
        opts?: CallOptions,
      ) => Promise<MessageShape<Out<Methods<S>[K]>>>
    : (opts?: CallOptions) => BidiStream<In<Methods<S>[K]>, Out<Methods<S>[K]>>;
} & { readonly raw: grpc.Client; close(): void };

function callOptions(opts?: CallOptions): grpc.CallOptions {
  return opts?.timeoutMs ? { deadline: new Date(Date.now() + opts.timeoutMs) } : {};
}

/** A Promise-based client for `service` at `target` (e.g. "unix:/run/vfio-broker/broker.sock"). */
export function createClient<S extends DescService>(
  service: S,
  target: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  options: grpc.ClientOptions = {},
): PromiseClient<S> {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(service), service.typeName);
  const raw = new Ctor(target, credentials, options) as unknown as grpc.Client &
    Record<string, (...args: unknown[]) => unknown>;
  const out: Record<string, unknown> = { raw, close: () => raw.close() };
  for (const method of service.methods as AnyMethod[]) {
    const fn = raw[method.localName]!.bind(raw);
    if (method.methodKind === "unary") {
      out[method.localName] = (req: unknown, opts?: CallOptions) =>
        new Promise((resolve, reject) => {
          fn(req, opts?.metadata ?? new grpc.Metadata(), callOptions(opts), (err: unknown, res: unknown) =>
            err ? reject(err) : resolve(res),
          );
        });
    } else {
      out[method.localName] = (opts?: CallOptions) => {
        const call = fn(opts?.metadata ?? new grpc.Metadata(), callOptions(opts)) as grpc.ClientDuplexStream<
          unknown,
          unknown
        >;
        return { call, send: (m: unknown) => call.write(m) };
      };
    }
  }
  return out as PromiseClient<S>;
}
