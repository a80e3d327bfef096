"""The vectorised decoder: numpy over blocks of visited states.

The visit sequence (``transitions.py``) is cut into blocks of about
``BLOCK_VISITS`` states, each ending where no submessage is open, so every
block is decoded on its own (records may span blocks). For a block:

1. what each visit writes: the state's head (tag, or tag and inline
   varint) and, for states with a buffer, its next field from that buffer:
   a fixed width for varints and fixed32/64, an entry of a string buffer
   (``strings.py``), or a non-proto record of the length the lengths
   buffer gives next. Fields of one buffer are read in visit order, so a
   field's offset is a running sum within its buffer (a sort by buffer);
2. the head of each submessage: its tag and its length, which counts the
   heads of the submessages inside it (a fixed point, one round per level
   of nesting at most);
3. the output: records come out last to first and each visit writes in
   front of what is already written, so the block's bytes are its visits'
   heads and fields in reverse order, gathered in one pass into the end of
   what is still free of the output.

   A chunk of whole non-proto records only (text, JSON: anything the
   encoder could not parse as a proto) skips the gather: each record is
   one field of the data buffer, cut out as its own ``bytes`` at the end,
   and the values are those records joined (:class:`RecordBytes`, which
   keeps them, so they are not cut again). The gather would copy them one
   Python call per record before the cut; this costs one call less.

Memory: the output and the decompressed buffers (about the decoded size
each), where the string entries start (4 bytes an entry), the transitions,
and per block about 190 bytes per visit (3 MiB): about 2x the decoded
size plus 3 MiB for typical chunks (``tests/test_transpose.py`` holds it
to 4x plus 4 MiB).
"""

from __future__ import annotations

import numpy as np

from ..records import RecordBytes
from .chunk_data import Chunk
from .errors import fail
from .gather import gather_bytes
from .machine import (
    C_STRING,
    C_VARINT,
    K_FAIL,
    K_FIXED,
    K_MSGSTART,
    K_NONPROTO,
    K_NOOP,
    K_STRING,
    K_SUBEND,
    K_SUBSTART,
    K_VARINT,
    NUM_KINDS,
)
from .strings import StringEntries
from .transitions import visit_blocks
from .varints import U32_LIMIT, encode_varints32, varint_array, varint_lengths

__all__ = ["decode_vector", "BLOCK_VISITS", "SUB_HEAD_BYTES"]

# Visits decoded together: large enough that numpy's per-call cost (some
# 150 calls a block) is repaid, small enough that a block's arrays (about
# 190 bytes a visit) stay in cache and bound the memory.
BLOCK_VISITS = 1 << 14
# Bytes of a submessage head slot: tag right-aligned in 5, length in 5.
SUB_HEAD_BYTES = 10
# First output allocation: the larger of 16 MiB and 64x the chunk's
# decompressed buffers and transitions, at most the declared size.
_FIRST_OUT = 16 << 20
_FIRST_RATIO = 64


class _Decoder:
    """State carried from block to block."""

    def __init__(self, ch: Chunk, num_records: int, decoded_data_size: int):
        m = ch.machine
        self.A = A = m.arrays()
        self.n = num_records
        self.d = decoded_data_size
        self.src = src = np.frombuffer(ch.src, dtype=np.uint8)
        self.head_base = hb = ch.nsrc
        self.sub_base = sb = hb + A.heads.size
        src[hb:sb] = A.heads
        self.head_src = A.head_src + hb
        self.sub_cap = (src.size - sb) // SUB_HEAD_BYTES
        self.bstart = np.array(ch.bstart, dtype=np.int64)
        self.bend = np.array(ch.bend, dtype=np.int64)
        self.pos = self.bstart.copy()
        self.nbuf = len(ch.bstart)
        cls = A.buffer_class
        # Varint bytes get bit 7 back; each value's last byte gets its own
        # byte back when the value is read: bit 7 clear again, as riegeli
        # writes them, or (data no encoder writes) from a copy.
        self.varint_orig = None
        parts = [src[self.bstart[b] : self.bend[b]] for b in np.flatnonzero(cls == C_VARINT).tolist()]
        if any(p.size and int(p.max()) >= 0x80 for p in parts):
            self.varint_orig = src[:hb].copy()
        for p in parts:
            p |= 0x80
        self.is_string_buffer = cls == C_STRING
        self.is_varint_buffer = cls == C_VARINT
        self._ar32 = np.arange(BLOCK_VISITS, dtype=np.uint32)
        sbuf = np.flatnonzero(self.is_string_buffer).tolist()
        self.strings = StringEntries(src, sbuf, self.bstart, self.bend) if sbuf else None
        lb = A.lengths_buffer
        self.lens_pos = self.lens_end = 0
        if lb >= 0:
            self.lens_pos, self.lens_end = ch.bstart[lb], ch.bend[lb]
        # The header's size is a claim: the output starts at what the
        # chunk's own bytes can plausibly make and grows (from the end, where
        # it is written) only as records really decode, so a forged size
        # costs no allocation.
        plausible = _FIRST_RATIO * (src.size + len(ch.trans))
        self.cap = min(decoded_data_size, max(_FIRST_OUT, plausible))
        self._out = None  # allocated at the first gather (see out)
        # Offsets likewise (8 bytes a record: a smaller start), filled from
        # the end: offsets[ocap] is the end.
        self.ocap = min(num_records, max(1 << 16, plausible // _FIRST_RATIO))
        self.offsets = np.empty(self.ocap + 1, dtype=np.int64)
        self.offsets[self.ocap] = decoded_data_size
        self.written = 0  # bytes written, from the end of the output
        self.records = 0  # records closed
        self.last_close = 0  # bytes written when the last record closed
        # Blocks of whole non-proto records not gathered yet: (bytes written
        # before the block, where each record starts in src, its size),
        # records in visit order; None once a block of other visits came.
        self.whole = [] if A.is_nonproto.any() else None

    def run(self, ch: Chunk) -> None:
        limit = 4 * len(ch.trans) + 1 + self.d + self.n
        for W in visit_blocks(self.A, ch.trans, ch.trans_where, limit, BLOCK_VISITS):
            self.block(W)

    def finish(self):
        n, d = self.n, self.d
        if self.records != n:
            fail(f"chunk decodes to {self.records} records, its header declares {n}")
        if self.written != self.last_close:
            fail(f"{self.written - self.last_close} bytes belong to no record")
        if self.written != d:
            fail(f"records decode to {self.written} bytes, the chunk header declares {d}")
        if self.whole is not None:
            return self._cut_whole()
        return memoryview(self.out), self.offsets

    @property
    def out(self) -> np.ndarray:
        """The output (``cap`` bytes, written from the end), allocated when
        first gathered into: a chunk of whole non-proto records never is."""
        if self._out is None:
            self._out = np.empty(self.cap, dtype=np.uint8)
        return self._out

    def _cut_whole(self):
        """The records of a chunk of whole non-proto records, cut from
        ``src`` (see the module docstring)."""
        starts = np.concatenate([w[1] for w in self.whole])[::-1]
        sizes = np.concatenate([w[2] for w in self.whole])[::-1]
        self.whole = None
        if starts.size == 0:
            return b"", self.offsets
        lo = int(starts.min())
        starts -= lo
        ends = starts + sizes
        raw = self.src[lo : lo + int(ends.max())].tobytes()
        records = list(map(raw.__getitem__, map(slice, starts.tolist(), ends.tolist())))
        del raw  # before the join: at most three copies of the records at once
        if len(records) == 1:
            return records[0], self.offsets
        return RecordBytes.join(records), self.offsets

    def _gather_whole(self) -> None:
        """The blocks put aside so far gathered into the output after all
        (a block of other visits follows them)."""
        for before, starts, sizes in self.whole:
            total = int(sizes.sum())
            if total:
                end = self.cap - before
                # Output order is visit order reversed.
                gather_bytes(self.src, starts[::-1], sizes[::-1], self.out[end - total : end])
        self.whole = None

    # -- one block ---------------------------------------------------------

    def block(self, W: np.ndarray) -> None:
        A = self.A
        m = W.size
        if m == 0:
            return
        kv = A.kind.take(W)
        cnt = np.bincount(kv, minlength=NUM_KINDS).tolist()
        if cnt[K_FAIL]:  # reachable only through an implicit chain's sink
            fail("transition leads outside the state machine")
        rc = None
        if cnt[K_MSGSTART] + cnt[K_NONPROTO]:
            rc = np.flatnonzero(A.is_record.take(W))
            if self.records + rc.size > self.n:
                fail(f"chunk decodes to more than the {self.n} records its header declares")
        if cnt[K_NOOP] == m:
            return

        # Segments in output order (visits last to first, head then data),
        # written through views in visit order.
        seg_src = np.empty(2 * m, dtype=np.int64)
        seg_len = np.empty(2 * m, dtype=np.int64)
        head_len, data_len = seg_len[-2::-2], seg_len[::-2]
        head_src, data_src = seg_src[-2::-2], seg_src[::-2]
        head_len[:] = A.head_len.take(W)
        head_src[:] = self.head_src.take(W)
        data_len[:] = 0
        data_src[:] = 0
        if cnt[K_VARINT] + cnt[K_FIXED] + cnt[K_STRING] + cnt[K_NONPROTO]:
            hb, ln, ds = self._fields(W, cnt)
            data_len[hb] = ln
            data_src[hb] = ds
        # Bytes written up to each visit (inclusive), heads of submessages
        # aside. (A running sum over the reversed segments would do it in
        # one call, but numpy's cumsum is about 4x slower on a negative
        # stride, and the takes from ``cum`` below want it contiguous.)
        cum = head_len + data_len
        np.cumsum(cum, out=cum)
        total = int(cum[-1])
        sub = None
        if cnt[K_SUBSTART] + cnt[K_SUBEND]:
            starts, head, hsrc, hx = self._submessages(W, cum, rc)
            head_len[starts] = head
            head_src[starts] = hsrc
            total += int(hx[-1])
            sub = (starts, hx)

        if total > self.d - self.written:
            fail(f"records exceed the {self.d} bytes the chunk header declares")
        whole = self.whole is not None and cnt[K_NONPROTO] + cnt[K_NOOP] == m and not head_len.any()
        if not whole and total > self.cap - self.written:
            self._grow_out(self.written + total)
        end = self.cap - self.written

        if rc is not None and rc.size:
            r0 = self.records
            k = rc.size
            at = cum.take(rc)
            if sub is not None:
                at += sub[1].take(np.searchsorted(sub[0], rc))
            at += self.written
            self.last_close = int(at[-1])
            if r0 + k > self.ocap:
                self._grow_offsets(r0 + k)
            np.subtract(self.d, at[::-1], out=self.offsets[self.ocap - r0 - k : self.ocap - r0])
            self.records = r0 + k

        if whole:
            self.whole.append((self.written, data_src.take(rc), data_len.take(rc)))
            self.written += total
            return
        if self.whole is not None:
            self._gather_whole()
        if total:
            gather_bytes(self.src, seg_src, seg_len, self.out[end - total : end])
        self.written += total

    def _grow_offsets(self, need: int) -> None:
        cap = min(self.n, max(need, 2 * self.ocap))
        offsets = np.empty(cap + 1, dtype=np.int64)
        offsets[cap - self.records :] = self.offsets[self.ocap - self.records :]
        self.offsets, self.ocap = offsets, cap

    def _grow_out(self, need: int) -> None:
        cap = min(self.d, max(need, 2 * self.cap))
        out = np.empty(cap, dtype=np.uint8)
        if self.written and self._out is not None:
            out[cap - self.written :] = self._out[self.cap - self.written :]
        self._out, self.cap = out, cap

    def _fields(self, W, cnt):
        """Fields read from buffers: ``(hb, ln, ds)``, the visits that read
        one (indices into the block, in no particular order), their sizes
        and where they start in ``src``; int64. Moves every buffer's read
        position on."""
        A = self.A
        hb = np.flatnonzero(A.has_buffer.take(W))
        Wb = W.take(hb)
        k = hb.size
        nb = self.nbuf
        if cnt[K_NONPROTO]:
            ln = A.width.take(Wb)
            npi = np.flatnonzero(A.is_nonproto.take(Wb))
            lengths, self.lens_pos = varint_array(
                self.src[: self.lens_end], self.lens_pos, npi.size, 5, "non-proto record lengths", "lengths buffer"
            )
            ln[npi] = lengths
        else:
            ln = None
        # Group the fields by buffer, keeping visit order within each: sort
        # ``buffer << 24 | field`` (numpy's vectorised sort beats its
        # stable one).
        if nb < 256 and k < 1 << 24:
            key = A.buffer_key.take(Wb)
            key |= self._arange32(k)
            key.sort()
            order = (key & 0xFFFFFF).astype(np.int64)
            key >>= 24
            bsorted = key.astype(np.int64)
        else:
            bb = A.bufidx.take(Wb)
            order = np.argsort(bb, kind="stable")
            bsorted = bb.take(order)
        hb = hb.take(order)
        ls = A.width.take(Wb.take(order)) if ln is None else ln.take(order)
        counts = np.bincount(bsorted, minlength=nb)
        gstart = np.cumsum(counts)
        gstart -= counts
        used = np.flatnonzero(counts)
        if cnt[K_STRING]:
            self._strings(used, counts, gstart, bsorted, ls)
        cs = np.cumsum(ls)
        first = gstart.take(used)
        last = first + counts.take(used)
        last -= 1
        base = np.zeros(nb, dtype=np.int64)
        base[used] = self.pos.take(used) - (cs.take(first) - ls.take(first))
        new_pos = base.take(used) + cs.take(last)
        over = new_pos > self.bend.take(used)
        if over.any():
            b = int(used[np.argmax(over)])
            fail(f"buffer {b} ends inside a field ({int(new_pos[np.argmax(over)] - self.bend[b])} bytes short)")
        self.pos[used] = new_pos
        ds = cs
        ds -= ls
        ds += base.take(bsorted)
        if cnt[K_VARINT]:
            vi = np.flatnonzero(self.is_varint_buffer.take(bsorted))
            fin = ds.take(vi)
            fin += ls.take(vi)
            fin -= 1
            src = self.src
            if self.varint_orig is None:
                src[fin] = src.take(fin) & 0x7F
            else:
                src[fin] = self.varint_orig.take(fin)
        return hb, ls, ds

    def _arange32(self, k: int) -> np.ndarray:
        a = self._ar32
        if a.size < k:
            a = self._ar32 = np.arange(max(k, 2 * a.size), dtype=np.uint32)
        return a[:k]

    def _strings(self, used, counts, gstart, bsorted, ls) -> None:
        """Sizes of the string fields into ``ls`` (fields sorted by
        buffer; ``gstart`` where each buffer's group begins)."""
        st = self.strings
        sb = used[self.is_string_buffer.take(used)]
        if st.regular.take(sb).all():
            slots = np.flatnonzero(self.is_string_buffer.take(bsorted))
            ls[slots] = st.take(sb, counts.take(sb), bsorted, slots)
            return
        for b in sb.tolist():
            a = int(gstart[b])
            k = int(counts[b])
            if st.regular[b]:
                one = np.array([b], dtype=np.int64)
                ls[a : a + k] = st.take(one, np.array([k]), bsorted, np.arange(a, a + k))
            else:
                ls[a : a + k] = st.sizes(b, int(self.pos[b]), int(self.bend[b]), k)

    def _submessages(self, W, cum, rc):
        """Heads of the submessages of a block: ``(starts, head, head_src,
        hx)``, the visits that start one, the bytes of their heads, where
        the heads are in ``src`` (written there now), and the running sum
        of ``head`` from 0. ``cum`` is the bytes written up to each visit
        without these heads."""
        A = self.A
        # (numpy's nonzero is several times faster on bool than on int8.)
        ev = np.flatnonzero(A.is_event.take(W))
        de = A.delta.take(W.take(ev))
        depth = np.cumsum(de, dtype=np.int64)
        if int(depth.min()) < 0:
            fail(f"submessage start without an end (visit {int(ev[np.argmax(depth < 0)])})")
        if rc is not None and rc.size:
            before = np.searchsorted(ev, rc)
            nz = before > 0
            if nz.any() and depth.take(before[nz] - 1).any():
                fail("a record starts while submessages are still open")
        if int(depth[-1]) != 0:
            fail(f"{int(depth[-1])} submessages still open at the end of the chunk")
        is_start = de < 0
        starts = ev.compress(is_start)  # a bool mask as an index is slower
        ns = starts.size
        # Starts up to each event: a start's rank among starts (+1), and
        # the starts before an end.
        nstart = np.cumsum(is_start)
        # Ends and starts of one level alternate in visit order: sorted by
        # level (stably), consecutive ones match.
        level = depth
        level += is_start
        order = _stable_order(level, int(level.max()) + 1)
        e_ev, s_ev = order[0::2], order[1::2]
        rank = nstart.take(s_ev)
        rank -= 1
        end_at = np.empty(ns, dtype=np.int64)
        end_at[rank] = ev.take(e_ev)
        # Heads of the submessages inside each one: starts from lo to i - 1.
        lo = np.empty(ns, dtype=np.int64)
        lo[rank] = nstart.take(e_ev)
        end_node = W.take(end_at)
        tl = A.tag_len.take(end_node)
        inner = cum.take(starts - 1)
        inner -= cum.take(end_at)
        # A length counts the heads inside, whose lengths count the heads
        # inside them: a fixed point, from the heads without them.
        head = varint_lengths(inner)
        head += tl
        hx = np.zeros(ns + 1, dtype=np.int64)
        while True:
            np.cumsum(head, out=hx[1:])
            length = hx[:-1] - hx.take(lo)
            length += inner
            new = varint_lengths(length)
            new += tl
            if np.array_equal(new, head):
                break
            head = new
        if int(length.max()) >= U32_LIMIT:
            fail("submessage longer than 2**32 - 1 bytes")
        if ns > self.sub_cap:
            self._grow(ns)
        heads = self.src[self.sub_base : self.sub_base + SUB_HEAD_BYTES * ns].reshape(ns, SUB_HEAD_BYTES)
        heads[:, :5] = A.tagr.take(end_node, axis=0)
        heads[:, 5:] = encode_varints32(length)
        head_src = np.arange(self.sub_base + 5, self.sub_base + 5 + SUB_HEAD_BYTES * ns, SUB_HEAD_BYTES, dtype=np.int64)
        head_src -= tl
        return starts, head, head_src, hx

    def _grow(self, ns: int) -> None:
        """Room for ``ns`` submessage heads after the state heads (a block
        larger than planned: one submessage open over many blocks)."""
        src = np.empty(self.sub_base + SUB_HEAD_BYTES * ns, dtype=np.uint8)
        src[: self.sub_base] = self.src[: self.sub_base]
        self.src = src
        self.sub_cap = ns


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """``argsort(keys, kind='stable')`` for ints in ``[0, bound)``: numpy's
    own on 8- or 16-bit keys (a radix sort: 1.6x faster here than sorting
    packed ``key << 24 | index``), else a sort of ``key << 32 | index``
    (numpy's vectorised sort beats its stable one)."""
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint8 if bound <= 256 else np.uint16), kind="stable")
    n = keys.size
    k = keys.astype(np.int64)
    k <<= 32
    k |= np.arange(n, dtype=np.int64)
    k.sort()
    k &= 0xFFFFFFFF
    return k


def decode_vector(ch: Chunk, num_records: int, decoded_data_size: int):
    """Decode a chunk parsed with room for the heads
    (``reserve_heads(SUB_HEAD_BYTES * BLOCK_VISITS)``). Returns
    ``(memoryview of uint8, int64 offsets)`` as
    :func:`arrayfs.riegeli.transpose.decode_transposed_chunk`."""
    dec = _Decoder(ch, num_records, decoded_data_size)
    dec.run(ch)
    return dec.finish()
