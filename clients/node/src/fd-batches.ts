// fd-batches.ts: owns how a client's grants and releases are gathered into FdBatches (on the
// workload connection or the fd channel): a release waits for the next grant of this turn of the
// event loop, or goes in one batch with the other releases of the turn; each release's promise
// hears its own item's result. It never chooses the transport or retries: `send` (the
// BrokerClient's, resumed and retried if brokerd restarts) does the exchange.
import { closeFd } from "@vfio-broker/native";
import { type FdReply, FdStatus } from "@vfio-broker/proto/messages";
import {
  type FdGrantInit,
  type FdReleaseInit,
  type FetchedFd,
  type GrantResult,
  itemError,
} from "./fd-channel.js";
import type { FdBatchInit } from "./session.js";

interface WaitingRelease {
  release: FdReleaseInit;
  resolve(): void;
  reject(e: unknown): void;
}

export class FdBatches {
  /** Releases waiting for the next batch. */
  readonly #releases: WaitingRelease[] = [];
  #flushing = false;

  /**
   * maxItems: the items one batch may carry (brokerd's maxFdBatchItems). send: one FdBatch
   * exchange, its reply and the fds of its granted items.
   */
  constructor(
    private readonly maxItems: () => number,
    private readonly send: (method: string, batch: FdBatchInit) => Promise<FetchedFd>,
  ) {}

  /**
   * Grants in one FdBatch (with any releases waiting to go). One result per grant, in order: its
   * reply and fd, or its error.
   */
  async grant(grants: FdGrantInit[]): Promise<GrantResult[]> {
    const max = this.maxItems();
    if (grants.length > max)
      throw new RangeError(`at most ${max} mappings in one batch, got ${grants.length}; split them`);
    // Releases that do not fit go first, in batches of their own (brokerd serves them in order), so
    // a grant of a page just released makes a fresh mapping, not another reference on the old one.
    this.#sendReleases(max - grants.length);
    const { items, fds } = await this.#batch("CreateMapping", grants);
    let next = 0;
    return items.map((it) => {
      if (it.status === FdStatus.OK) return { reply: it, fd: fds[next++]! };
      return { error: itemError(it, "CreateMapping") };
    });
  }

  /**
   * A release. It is not sent on its own at once: it rides along with the next grant of this turn
   * of the event loop, or goes in one batch with the other releases of this turn after it.
   * Resolves when brokerd has done it; a cookie brokerd no longer has (revoked meanwhile, or
   * released by a retry) counts as released.
   */
  release(release: FdReleaseInit): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#releases.push({ release, resolve, reject });
      if (this.#flushing) return;
      this.#flushing = true;
      setImmediate(() => {
        this.#flushing = false;
        this.#sendReleases(0);
      });
    });
  }

  /** The client is closing its device files, which releases everything: waiting releases are done. */
  settleWaiting(): void {
    for (const r of this.#releases.splice(0)) r.resolve();
  }

  /**
   * Sends waiting releases in batches of their own until at most `keep` wait. Each release's own
   * promise hears how it went (#batch settles it), so the batch's is not needed here.
   */
  #sendReleases(keep: number): void {
    while (this.#releases.length > keep) this.#batch("ReleaseMapping", []).catch(() => {});
  }

  /**
   * One FdBatch: the waiting releases that fit, then `grants`. The releases' promises are settled
   * here (with their own item's result, or the whole batch's error); the grants' items and fds
   * are returned.
   */
  async #batch(method: string, grants: FdGrantInit[]): Promise<{ items: FdReply[]; fds: number[] }> {
    const releases = this.#releases.splice(0, this.maxItems() - grants.length);
    let got: FetchedFd;
    try {
      got = await this.send(method, { releases: releases.map((r) => r.release), grants });
    } catch (e) {
      for (const r of releases) r.reject(e);
      throw e;
    }
    const items = got.reply.items;
    const fds = got.fds ?? [];
    if (items.length !== releases.length + grants.length) {
      for (const fd of fds) closeFd(fd);
      const e = new Error(
        `fd channel: a batch of ${releases.length + grants.length} items got ${items.length} results`,
      );
      for (const r of releases) r.reject(e);
      throw e;
    }
    releases.forEach((r, i) => {
      const it = items[i]!;
      if (it.status === FdStatus.OK || (it.status === FdStatus.REFUSED && it.grpcCode === "NOT_FOUND"))
        r.resolve();
      else r.reject(itemError(it, "ReleaseMapping"));
    });
    return { items: items.slice(releases.length), fds };
  }
}
