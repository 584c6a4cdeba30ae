// The admin service's only way to brokerd: a gRPC AdminService client on the admin Unix socket.
// It turns gRPC failures into HTTP errors (brokerd unreachable -> 503, NOT_FOUND -> 404, ...), so
// routes just await calls. It holds no device state and caches nothing.
import * as grpc from "@grpc/grpc-js";
import { AdminService, createClient, type PromiseClient } from "@vfio-broker/proto";

export type AdminClient = PromiseClient<typeof AdminService>;

/** An error with the HTTP status the REST API answers with. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

const HTTP_OF: Partial<Record<grpc.status, number>> = {
  [grpc.status.INVALID_ARGUMENT]: 400,
  [grpc.status.OUT_OF_RANGE]: 400,
  [grpc.status.NOT_FOUND]: 404,
  [grpc.status.ALREADY_EXISTS]: 409,
  [grpc.status.FAILED_PRECONDITION]: 409,
  [grpc.status.ABORTED]: 409,
  [grpc.status.RESOURCE_EXHAUSTED]: 429,
  [grpc.status.UNIMPLEMENTED]: 501,
};

export interface Brokerd {
  readonly target: string;
  /** Runs one AdminService call; rejects with HttpError. */
  call<T>(fn: (c: AdminClient) => Promise<T>): Promise<T>;
  close(): void;
}

export function connectBrokerd(socketPath: string, opts: { timeoutMs?: number } = {}): Brokerd {
  const target = `unix:${socketPath}`;
  // Short reconnect backoff: when brokerd restarts, the console should see it back within seconds.
  const client = createClient(AdminService, target, grpc.credentials.createInsecure(), {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    "grpc.min_reconnect_backoff_ms": 200,
  });
  const timeoutMs = opts.timeoutMs ?? 3000;
  return {
    target,
    async call<T>(fn: (c: AdminClient) => Promise<T>): Promise<T> {
      try {
        return await fn(withDeadline(client, timeoutMs));
      } catch (e) {
        throw toHttpError(e, socketPath);
      }
    },
    close: () => client.close(),
  };
}

/** The same client, every unary call with a deadline (a stopped brokerd must not hang requests). */
function withDeadline(client: AdminClient, timeoutMs: number): AdminClient {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function" || prop === "close") return v;
      return (req: unknown, o?: { timeoutMs?: number }) => v(req, { timeoutMs, ...o });
    },
  });
}

function toHttpError(e: unknown, socketPath: string): Error {
  if (e instanceof HttpError) return e;
  const err = e as Partial<grpc.ServiceError>;
  if (typeof err.code !== "number") return e as Error;
  const details = err.details || err.message || "";
  switch (err.code) {
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
    case grpc.status.CANCELLED:
      return new HttpError(
        503,
        `brokerd is unreachable on ${socketPath} (${details || grpc.status[err.code]}); ` +
          "check that vfio-brokerd is running and that this service may open its admin socket",
      );
    case grpc.status.PERMISSION_DENIED:
    case grpc.status.UNAUTHENTICATED:
      // The admin socket refused *us*: an installation problem, not the HTTP caller's.
      return new HttpError(
        503,
        `brokerd refused this admin service on ${socketPath}: ${details}; run it as root or in brokerd's --admin-gid group`,
      );
    default:
      return new HttpError(HTTP_OF[err.code] ?? 502, details || `brokerd answered ${grpc.status[err.code]}`);
  }
}
