// memory.ts: owns memfds and mappings. A Mapping's buffer IS the mapped memory (no copy). It is
// unmapped exactly once: by unmap(), which also detaches the buffer (byteLength becomes 0, every view
// becomes empty), or when the buffer is garbage collected. A "r" mapping is PROT_READ: JavaScript
// cannot make an ArrayBuffer read-only, so writing through it faults (SIGSEGV) — callers that map
// "r" must only read. Ranges past the end of a regular file are refused (they would SIGBUS).
import { raw } from "./binding.js";
import { invalid } from "./errors.js";

export type Prot = "r" | "rw";

export interface Mapping {
  readonly buffer: ArrayBuffer;
  readonly length: number;
  readonly mapped: boolean;
  unmap(): void;
}

export const PAGE_SIZE: number = raw.PAGE_SIZE;

/** memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING) + ftruncate(size). The caller closes it. */
export function memfdCreate(name: string, size: number | bigint): number {
  return raw.memfdCreate(name, size);
}

class MappingImpl implements Mapping {
  readonly #handle: unknown;
  readonly #buffer: ArrayBuffer;
  readonly length: number;
  #mapped = true;

  constructor(handle: unknown, buffer: ArrayBuffer, length: number) {
    this.#handle = handle;
    this.#buffer = buffer;
    this.length = length;
  }

  get buffer(): ArrayBuffer {
    return this.#buffer;
  }

  get mapped(): boolean {
    return this.#mapped;
  }

  unmap(): void {
    if (!this.#mapped) return;
    this.#mapped = false;
    raw.munmap(this.#handle, this.#buffer);
  }
}

/** mmap(MAP_SHARED). offset must be page aligned, length at least 1 and within a regular file. */
export function mmap(fd: number, offset: number | bigint, length: number, prot: Prot): Mapping {
  if (prot !== "r" && prot !== "rw") throw invalid("mmap", `prot must be "r" or "rw", got ${String(prot)}`);
  const [handle, buffer] = raw.mmap(fd, offset, length, prot === "rw");
  return new MappingImpl(handle, buffer, length);
}
