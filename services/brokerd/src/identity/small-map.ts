// SmallMap: a Map that holds its first entry in two fields and makes a real Map only for a second
// (a session's device files: almost every session opens one, and an empty or one-entry Map is
// ~180 bytes of every idle session). Same order and behaviour as Map for what it implements
// (get, has, set, delete, clear, size, keys, values, entries, forEach, iteration). Pure: no I/O.
export class SmallMap<K, V> implements Map<K, V> {
  #key: K | undefined;
  #value: V | undefined;
  #has = false;
  #many: Map<K, V> | undefined;

  get size(): number {
    return this.#many ? this.#many.size : this.#has ? 1 : 0;
  }

  get(k: K): V | undefined {
    if (this.#many) return this.#many.get(k);
    return this.#has && Object.is(this.#key, k) ? this.#value : undefined;
  }

  has(k: K): boolean {
    if (this.#many) return this.#many.has(k);
    return this.#has && Object.is(this.#key, k);
  }

  set(k: K, v: V): this {
    if (this.#many) this.#many.set(k, v);
    else if (!this.#has || Object.is(this.#key, k)) {
      this.#key = k;
      this.#value = v;
      this.#has = true;
    } else {
      this.#many = new Map([[this.#key as K, this.#value as V]]);
      this.#many.set(k, v);
      this.#drop();
    }
    return this;
  }

  delete(k: K): boolean {
    if (this.#many) return this.#many.delete(k);
    if (!this.has(k)) return false;
    this.#drop();
    return true;
  }

  clear(): void {
    this.#many = undefined;
    this.#drop();
  }

  #drop(): void {
    this.#key = undefined;
    this.#value = undefined;
    this.#has = false;
  }

  *entries(): MapIterator<[K, V]> {
    if (this.#many) yield* this.#many.entries();
    else if (this.#has) yield [this.#key as K, this.#value as V];
  }

  *keys(): MapIterator<K> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  forEach(cb: (value: V, key: K, map: Map<K, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) cb.call(thisArg, v, k, this);
  }

  get [Symbol.toStringTag](): string {
    return "SmallMap";
  }
}
