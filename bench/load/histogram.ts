/**
 * A log-linear latency histogram: exact below 64 µs, then 64 buckets per
 * power of two (about 1.6% relative error), up to about 18 minutes. Cheap to
 * record into, and mergeable across processes as a sparse list of buckets.
 *
 * @module
 */

/** Sub-buckets per power of two. */
const SUB = 64;
/** Bits of {@linkcode SUB}. */
const SUB_BITS = 6;
/** Enough buckets for 2^30 µs (about 18 minutes). */
const BUCKETS = (30 - SUB_BITS + 1) * SUB + SUB;

/** A histogram as it travels between processes: `[bucket, count]` pairs. */
export interface SparseHistogram {
  buckets: [number, number][];
  count: number;
  /** Largest value recorded, in microseconds. */
  max: number;
  /** Sum of the values recorded, in microseconds. */
  sum: number;
}

function bucketOf(us: number): number {
  const v = us < 0 ? 0 : Math.floor(us);
  if (v < 2 * SUB) return v;
  const k = 31 - Math.clz32(v);
  const index = (k - SUB_BITS) * SUB + (v >>> (k - SUB_BITS));
  return index < BUCKETS ? index : BUCKETS - 1;
}

/** The smallest value, in microseconds, that falls in `index`. */
function lowerBound(index: number): number {
  if (index < 2 * SUB) return index;
  const k = Math.floor(index / SUB) + SUB_BITS - 1;
  const sub = index - (k - SUB_BITS) * SUB;
  return sub * 2 ** (k - SUB_BITS);
}

/** Latencies in microseconds, bucketed. */
export class Histogram {
  /** Count per bucket. */
  readonly counts: Float64Array = new Float64Array(BUCKETS);
  /** Values recorded. */
  count = 0;
  /** Largest value recorded, in microseconds. */
  max = 0;
  /** Sum of the values recorded, in microseconds. */
  sum = 0;

  /** Records one value in microseconds. */
  record(us: number): void {
    this.counts[bucketOf(us)]! += 1;
    this.count++;
    this.sum += us;
    if (us > this.max) this.max = us;
  }

  /** Adds another histogram, local or from another process. */
  merge(other: Histogram | SparseHistogram): void {
    if (other instanceof Histogram) {
      for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    } else {
      for (const [index, n] of other.buckets) this.counts[index]! += n;
    }
    this.count += other.count;
    this.sum += other.sum;
    if (other.max > this.max) this.max = other.max;
  }

  /**
   * The value at percentile `p` (0 to 100), in microseconds: the upper edge
   * of its bucket, capped at the largest value seen. `0` when empty.
   */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(lowerBound(i + 1), this.max);
    }
    return this.max;
  }

  /** Mean in microseconds; `0` when empty. */
  mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  /** The non-empty buckets, to send to another process. */
  toSparse(): SparseHistogram {
    const buckets: [number, number][] = [];
    for (let i = 0; i < BUCKETS; i++) {
      const n = this.counts[i]!;
      if (n > 0) buckets.push([i, n]);
    }
    return { buckets, count: this.count, max: this.max, sum: this.sum };
  }

  /** A histogram rebuilt from {@linkcode Histogram.toSparse}. */
  static fromSparse(sparse: SparseHistogram): Histogram {
    const histogram = new Histogram();
    histogram.merge(sparse);
    return histogram;
  }
}
