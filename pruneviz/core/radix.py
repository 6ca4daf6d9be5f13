"""Stable orderings of float32 scores by radix sort, compiled with numba: the big-model engine's sorts.

Why not numpy or torch: ranking ViT-B/16's 86 M weights globally was one sort of 86 M 64-bit keys, which
``np.sort`` does in 2.7-7 s on these 2-core machines (``torch.sort`` and ``argsort(stable=True)`` far longer),
and every criterion switch paid it again. A radix sort needs no comparisons: here 1.0 s for the same 86 M
scores once the memory is mapped (2.7 s in a fresh process on this VM, most of it first writes to new pages).

A key is the score's float32 bits made so that their unsigned order is the float order (-0.0 counted as +0.0:
the two tie, as in a float sort). It carries a value along (a position, or a tensor and a position), and every
pass is stable, so keys that tie keep the order they were written in: the order of a stable argsort.

* one tensor (:func:`order_f32`): least significant byte first, four passes through a scratch buffer; a pass
  whose byte is the same for every key is skipped;
* all tensors together (:func:`global_order_f32`): most significant first, so it needs one copy of the keys:
  each key goes to its bucket of the top 16 bits, then every bucket (small: it fits in cache) is sorted by the
  low 16 bits; the two cores share the tensors, the buckets and the final split.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

_SIGN = np.uint32(0x80000000)


@njit(cache=True, nogil=True, inline="always")
def _mono(bits):  # pragma: no cover - compiled
    """The order-preserving uint32 of float32 ``bits`` (an int32): unsigned order = float order, -0.0 as +0.0."""
    b = np.uint32(bits)
    if b == _SIGN:
        b = np.uint32(0)
    return ~b if b & _SIGN else b | _SIGN


@njit(cache=True, nogil=True)
def _pack(bits, keys, hist):  # pragma: no cover - compiled
    """``keys[i]`` = the order-preserving uint32 of the float32 ``bits[i]``; each byte counted into ``hist``."""
    for i in range(bits.size):
        b = _mono(bits[i])
        keys[i] = b
        hist[0, b & 255] += 1
        hist[1, (b >> 8) & 255] += 1
        hist[2, (b >> 16) & 255] += 1
        hist[3, b >> 24] += 1


@njit(cache=True, nogil=True)
def _sort(keys, vals, spare_keys, spare_vals, hist, index):  # pragma: no cover - compiled
    """Sort ``keys`` (uint32) stably, carrying ``vals`` (``index``: the values are the positions 0..n-1 and
    ``vals`` is only written); the buffers are swapped pass by pass. Returns the sorted values' array."""
    n = keys.size
    src_k, src_v, dst_k, dst_v = keys, vals, spare_keys, spare_vals
    start = np.empty(256, dtype=np.int64)
    for p in range(4):
        count = hist[p]
        if count.max() == n:  # the same digit for every key: this pass would change nothing
            continue
        total = 0
        for d in range(256):
            start[d] = total
            total += count[d]
        shift = 8 * p
        if index:
            for i in range(n):
                k = src_k[i]
                j = start[(k >> shift) & 255]
                start[(k >> shift) & 255] = j + 1
                dst_k[j] = k
                dst_v[j] = i
            index = False
        else:
            for i in range(n):
                k = src_k[i]
                j = start[(k >> shift) & 255]
                start[(k >> shift) & 255] = j + 1
                dst_k[j] = k
                dst_v[j] = src_v[i]
        src_k, src_v, dst_k, dst_v = dst_k, dst_v, src_k, src_v
    if index:  # no pass ran: the order is the identity
        for i in range(n):
            src_v[i] = i
    return src_v


def _keys(scores: np.ndarray, out: np.ndarray, hist: np.ndarray) -> None:
    _pack(np.ascontiguousarray(scores, dtype=np.float32).view(np.int32), out, hist)


def order_f32(scores: np.ndarray) -> np.ndarray:
    """Positions of the float32 ``scores`` (1-D, fewer than 2**32) in ascending order, ties by position (the
    stable argsort), as uint32."""
    n = scores.size
    keys, spare_keys, spare_vals, out = (np.empty(n, dtype=np.uint32) for _ in range(4))
    hist = np.zeros((4, 256), dtype=np.int64)
    _keys(scores, keys, hist)
    result = _sort(keys, out, spare_keys, spare_vals, hist, True)
    if result is not out:
        out[:] = result
    return out


@njit(cache=True, nogil=True)
def _count_top(bits, count):  # pragma: no cover - compiled
    for i in range(bits.size):
        count[_mono(bits[i]) >> 16] += 1


@njit(cache=True, nogil=True)
def _scatter_top(bits, tag0, cursor, keys, vals):  # pragma: no cover - compiled
    """Each score's key and tag ``tag0 + position`` to the next free place of its top-16-bit bucket."""
    for i in range(bits.size):
        k = _mono(bits[i])
        j = cursor[k >> 16]
        cursor[k >> 16] = j + 1
        keys[j] = k
        vals[j] = tag0 + i


@njit(cache=True, nogil=True)
def _sort_buckets(keys, vals, bounds, first, last, spare_keys, spare_vals):  # pragma: no cover - compiled
    """Sort each bucket ``[bounds[b], bounds[b + 1])`` for ``first <= b < last`` by the keys' low 16 bits,
    stably: two byte passes into the spare buffers and back (small buckets: insertion sort)."""
    count = np.empty((2, 256), dtype=np.int64)
    for b in range(first, last):
        lo, hi = bounds[b], bounds[b + 1]
        n = hi - lo
        if n < 2:
            continue
        if n <= 32:
            for i in range(lo + 1, hi):
                k, v = keys[i], vals[i]
                j = i - 1
                while j >= lo and keys[j] > k:
                    keys[j + 1] = keys[j]
                    vals[j + 1] = vals[j]
                    j -= 1
                keys[j + 1] = k
                vals[j + 1] = v
            continue
        count[:] = 0
        for i in range(lo, hi):
            count[0, keys[i] & 255] += 1
            count[1, (keys[i] >> 8) & 255] += 1
        # pass 0 (low byte) into the spares, pass 1 back; a pass whose byte is constant is a plain copy
        for p in range(2):
            total = 0
            for d in range(256):
                c = count[p, d]
                count[p, d] = total
                total += c
            shift = 8 * p
            for i in range(n):
                if p == 0:
                    k, v = keys[lo + i], vals[lo + i]
                else:
                    k, v = spare_keys[i], spare_vals[i]
                d = (k >> shift) & 255
                j = count[p, d]
                count[p, d] = j + 1
                if p == 0:
                    spare_keys[j] = k
                    spare_vals[j] = v
                else:
                    keys[lo + j] = k
                    vals[lo + j] = v


@njit(cache=True, nogil=True)
def _split(tagged, tid_shift, lo, hi, cursor, owner, orders):  # pragma: no cover - compiled
    """From values ``tid << tid_shift | position`` in global order, ranks ``lo <= r < hi``: the owner (tensor
    index) of each rank into ``owner``, and each tensor's positions into ``orders`` from its ``cursor`` on."""
    mask = np.uint32((1 << tid_shift) - 1)
    for r in range(lo, hi):
        v = tagged[r]
        t = v >> tid_shift
        owner[r] = t
        orders[cursor[t]] = v & mask
        cursor[t] += 1


def warm() -> None:
    """Load the compiled kernels (from numba's cache after the first run: ~1 s of a fresh process's time)."""
    x = np.zeros(40, dtype=np.float32)
    order_f32(x)
    global_order_f32([x], 1)


def warm_async() -> None:
    """:func:`warm` in a daemon thread: a big model's session starts it before it copies the weights."""
    threading.Thread(target=warm, name="pruneviz-radix-warm", daemon=True).start()


def global_order_f32(scores: list[np.ndarray], tid_bits: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ascending order of all float32 ``scores`` (1-D arrays, one per tensor) together, ties by (tensor,
    position), as the owner (tensor index: uint8, or uint16 past 255 tensors) of each global rank and each
    tensor's positions in that order (uint32 views of one array). There must be fewer than ``2**tid_bits``
    tensors of fewer than ``2**(32 - tid_bits)`` scores each.

    Most significant digit first, so the sort needs memory for one copy of the keys and their tags only: the
    keys go straight from the scores to their bucket of the top 16 bits (tensor after tensor, position after
    position, so ties keep (tensor, position) order: the order of one stable sort of the concatenation), each
    tagged ``tensor << (32 - tid_bits) | position``; then each bucket (a few thousandths of the scores, in
    cache) is sorted by the low 16 bits, stably. The keys' array is reused for the tensors' positions."""
    sizes = np.array([s.size for s in scores], dtype=np.int64)
    n, tensors = int(sizes.sum()), len(scores)
    bits = [np.ascontiguousarray(s, dtype=np.float32).view(np.int32) for s in scores]
    # up to 256 tensors, one histogram each: every tensor's place in every bucket is known, so the two cores
    # share each step (tensors, buckets, rank ranges); more tensors share one histogram and run on one core
    per_tensor = tensors <= 256
    count = np.zeros((tensors if per_tensor else 1, 1 << 16), dtype=np.int64)
    for t, b in enumerate(bits):
        _count_top(b, count[t if per_tensor else 0])
    total = count.sum(axis=0)
    bounds = np.zeros((1 << 16) + 1, dtype=np.int64)
    np.cumsum(total, out=bounds[1:])
    keys, vals = np.empty(n, dtype=np.uint32), np.empty(n, dtype=np.uint32)
    # where each tensor's keys start in each bucket: after the bucket's start and the earlier tensors' keys
    cursor = bounds[:-1] + np.cumsum(count, axis=0) - count
    shift = 32 - tid_bits
    workers = 2 if per_tensor and n >= 1 << 20 else 1
    mid = int(np.searchsorted(bounds, n // 2))  # the buckets split in two halves of about n / 2 keys
    halves = [(0, mid), (mid, 1 << 16)] if workers == 2 else [(0, 1 << 16)]
    biggest = int(total.max())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda ts: [_scatter_top(bits[t], t << shift, cursor[t if per_tensor else 0], keys, vals)
                                  for t in ts], [range(w, tensors, workers) for w in range(workers)]))
        list(pool.map(lambda h: _sort_buckets(keys, vals, bounds, h[0], h[1], np.empty(biggest, dtype=np.uint32),
                                              np.empty(biggest, dtype=np.uint32)), halves))
        owner = np.empty(n, dtype=np.uint8 if tensors < 256 else np.uint16)
        orders = keys  # the keys are done with: their memory takes the positions
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        # each tensor's cursor at the start of a half: its offset plus its keys in the buckets before the half
        starts = [offsets[:-1] + (count[:, :h[0]].sum(axis=1) if per_tensor else 0) for h in halves]
        list(pool.map(lambda i: _split(vals, shift, bounds[halves[i][0]], bounds[halves[i][1]], starts[i].copy(),
                                       owner, orders), range(len(halves))))
    return owner, [orders[offsets[t]:offsets[t + 1]] for t in range(tensors)]
