"""The state machine run state by state, as upstream's decoder does
(``transpose_decoder.cc``, ``Decode`` without field projection): for small
chunks, where numpy's per-call cost would dominate, and as the reference
the vectorised decoder is tested against.

Records come out last to first. Each state copies its field (tag plus data
from its buffer, read front to back) in front of what is already written;
an end-of-submessage state marks a position and the matching
start-of-submessage state writes tag and length in front of the
submessage. After a state the machine moves to ``next_node`` (implicit) or
reads a transition byte: ``next_node + (byte >> 2)``, then ``byte & 3``
more moves to ``next_node + 0``. A start-of-message state closes a record.
"""

from __future__ import annotations

import numpy as np

from ..varint import encode_varint
from .chunk_data import Chunk
from .errors import fail
from .machine import K_COPY, K_FIXED, K_MSGSTART, K_NONPROTO, K_NOOP, K_STRING, K_SUBEND, K_SUBSTART, K_VARINT
from .varints import U32_LIMIT, read_varint32

__all__ = ["decode_scalar"]

# Varint bytes in buffers have bit 7 cleared; all but a value's last get it back.
_SET_BIT7 = bytes(b | 0x80 for b in range(256))


def decode_scalar(ch: Chunk, num_records: int, decoded_data_size: int):
    """Decode a parsed chunk. Returns ``(bytes, int64 offsets)`` as
    :func:`arrayfs.riegeli.transpose.decode_transposed_chunk`.

    Every state visited writes a byte, closes a record, opens a submessage
    (each needing a head of 2 bytes later) or is a no-op; the first three
    are bounded by the header's sizes, no-ops by a budget (valid data has
    at most one per move), so the loop ends on any input.
    """
    m = ch.machine
    kind, nxt, implicit, width, bufidx = m.kind, m.nxt, m.implicit, m.width, m.bufidx
    heads, tags = m.heads, m.tags
    src = bytes(memoryview(ch.src)[: ch.nsrc])
    bpos = list(ch.bstart)
    bend = ch.bend
    lpos = lend = 0
    if m.lengths_buffer >= 0:
        lpos = bpos[m.lengths_buffer]
        lend = bend[m.lengths_buffer]
    trans = ch.trans
    tlen = len(trans)
    noops = 4 * tlen + 1
    max_open = decoded_data_size // 2
    pieces = []
    append = pieces.append
    dest = 0
    stack = []
    limits = []
    node = m.first
    pending = 0
    tpos = 0
    while True:
        k = kind[node]
        if k <= K_MSGSTART:
            if k == K_NOOP:
                noops -= 1
                if noops < 0:
                    fail("state machine visits more states than the records can hold")
            else:
                if k == K_NONPROTO:
                    length, q = read_varint32(src, lpos, "non-proto record length", "decompressed buffers")
                    if q > lend:
                        fail("non-proto lengths buffer ends inside a length")
                    lpos = q
                    b = bufidx[node]
                    a = bpos[b]
                    q = a + length
                    if q > bend[b]:
                        fail(f"non-proto record of {length} bytes overruns buffer {b}")
                    bpos[b] = q
                    append(src[a:q])
                    dest += length
                    if dest > decoded_data_size:
                        fail(f"records exceed the {decoded_data_size} bytes the chunk header declares")
                if stack:
                    fail("a record starts while submessages are still open")
                if len(limits) == num_records:
                    fail(f"more than the {num_records} records the chunk header declares")
                limits.append(dest)
        elif k == K_SUBEND:
            if len(stack) >= max_open:
                fail("more submessages open than the records can hold")
            stack.append((dest, node))
        else:
            if k == K_VARINT:
                b = bufidx[node]
                a = bpos[b]
                q = a + width[node]
                if q > bend[b]:
                    fail(f"buffer {b} ends inside a varint field (state {node})")
                bpos[b] = q
                piece = heads[node] + src[a : q - 1].translate(_SET_BIT7) + src[q - 1 : q]
            elif k == K_COPY:
                piece = heads[node]
            elif k == K_STRING:
                b = bufidx[node]
                a = bpos[b]
                length, q = read_varint32(src, a, f"string length in buffer {b}", "decompressed buffers")
                q += length
                if q > bend[b]:
                    fail(f"string of {length} bytes overruns buffer {b} (state {node})")
                bpos[b] = q
                piece = heads[node] + src[a:q]
            elif k == K_SUBSTART:
                if not stack:
                    fail(f"submessage start without an end (state {node})")
                end_pos, end_node = stack.pop()
                length = dest - end_pos
                if length >= U32_LIMIT:
                    fail("submessage longer than 2**32 - 1 bytes")
                piece = tags[end_node] + encode_varint(length)
            elif k == K_FIXED:
                b = bufidx[node]
                a = bpos[b]
                q = a + width[node]
                if q > bend[b]:
                    fail(f"buffer {b} ends inside a fixed field (state {node})")
                bpos[b] = q
                piece = heads[node] + src[a:q]
            else:
                fail(f"transition to state {node}, outside the {m.S} states")
            append(piece)
            dest += len(piece)
            if dest > decoded_data_size:
                fail(f"records exceed the {decoded_data_size} bytes the chunk header declares")
        # Move to the next state.
        if implicit[node]:
            node = nxt[node]
        elif pending:
            pending -= 1
            node = nxt[node]
        elif tpos < tlen:
            t = trans[tpos]
            tpos += 1
            node = nxt[node] + (t >> 2)
            pending = t & 3
        else:
            break
    if stack:
        fail(f"{len(stack)} submessages still open at the end of the chunk")
    if len(limits) != num_records:
        fail(f"chunk decodes to {len(limits)} records, its header declares {num_records}")
    if (limits[-1] if limits else 0) != dest:
        fail(f"{dest - (limits[-1] if limits else 0)} bytes belong to no record")
    if dest != decoded_data_size:
        fail(f"records decode to {dest} bytes, the chunk header declares {decoded_data_size}")
    pieces.reverse()
    limits.reverse()
    limits.append(0)
    offsets = np.array(limits, dtype=np.int64)
    np.subtract(dest, offsets, out=offsets)
    return b"".join(pieces), offsets
