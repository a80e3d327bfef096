"""The state machine of a transposed chunk: what each state does, where it
moves next, and the chains of implicit moves.

Upstream: riegeli ``chunk_encoding/transpose_internal.h`` (``MessageId``,
``Subtype``, ``kSubmessageWireType``) and ``transpose_decoder.cc``
(``Parse``: the state machine part of the header, and
``ContainsImplicitLoop``).

In the header, after the bucket and buffer lengths::

    state_machine_size                  varint32 (S)
    tags[S]                             varint32: 0 no-op, 1 non-proto
                                        record, 2 start of submessage,
                                        3 start of message, else a proto
                                        tag (wire type 6: end of a
                                        submessage whose tag has type 2)
    next_node[S]                        varint32; >= S marks an implicit
                                        transition to next_node - S
    subtypes                            1 byte per varint-typed tag: 0..9
                                        the value's length in its buffer,
                                        10..137 an inline value 0..127
    buffer_indices                      varint32 per state with a buffer
    first_node                          varint32

A parsed machine is kept as Python lists (what the interpreter reads) and,
on first use by the vectorised decoder, as numpy tables
(:class:`MachineArrays`). Machines of small headers are cached by their
bytes: consecutive chunks of one record type often share them.
"""

from __future__ import annotations

import threading

import numpy as np

from ..varint import encode_varint
from .errors import fail
from .varints import read_varint32, read_varint_list

__all__ = [
    "K_NOOP",
    "K_NONPROTO",
    "K_MSGSTART",
    "K_SUBSTART",
    "K_SUBEND",
    "K_COPY",
    "K_VARINT",
    "K_FIXED",
    "K_STRING",
    "K_FAIL",
    "PAD",
    "Machine",
    "MachineArrays",
    "parse_machine",
]

# MessageId values (transpose_internal.h) that are not proto tags.
_ID_NOOP, _ID_NONPROTO, _ID_START_SUBMESSAGE, _ID_START_MESSAGE = 0, 1, 2, 3
_SUBMESSAGE_WIRE_TYPE = 6
_SUBTYPE_INLINE0 = 10  # Subtype::kVarintInline0
_SUBTYPE_INLINE_MAX = _SUBTYPE_INLINE0 + 0x7F

# What visiting a state does.
K_NOOP = 0
K_NONPROTO = 1  # copy a whole non-proto record, then close the record
K_MSGSTART = 2  # close the record (its first byte is the current position)
K_SUBSTART = 3  # write tag + length of the submessage opened by K_SUBEND
K_SUBEND = 4  # remember the position where a submessage ends
K_COPY = 5  # tag only (groups), or tag + inline varint byte
K_VARINT = 6  # tag + `width` buffer bytes, all but the last with bit 7 set
K_FIXED = 7  # tag + `width` (4 or 8) buffer bytes
K_STRING = 8  # tag + varint length + payload from the buffer
K_FAIL = 9  # outside the state machine
NUM_KINDS = 10

# What a buffer holds, from the states that read it; one class per buffer.
C_NONE, C_VARINT, C_FIXED, C_STRING, C_NONPROTO, C_LENGTHS = range(6)
_CLASS_OF_KIND = {K_VARINT: C_VARINT, K_FIXED: C_FIXED, K_STRING: C_STRING, K_NONPROTO: C_NONPROTO}

# A transition byte's offset reaches at most 63 states past a base: the
# tables have this many failure states after the last one.
PAD = 64
# Bytes of a state's head slot (tag up to 5 bytes + an inline varint byte).
HEAD_SLOT = 6


class Machine:
    """A parsed state machine as Python lists (padded with ``PAD`` failure
    states).

    Per state: ``kind`` (``K_*``), ``nxt`` (next state or base),
    ``implicit``, ``width`` (bytes read from the buffer by varint and fixed
    states), ``bufidx`` (-1: none), ``heads`` (bytes written before the
    data: the tag, plus the value of an inline varint); ``tags`` (tag
    bytes, for heads of submessages; S entries). ``first`` is the first
    state, ``lengths_buffer`` the buffer of non-proto record lengths (-1:
    none), ``buffer_class`` the ``C_*`` of each buffer.
    """

    __slots__ = (
        "S",
        "kind",
        "nxt",
        "implicit",
        "width",
        "bufidx",
        "heads",
        "tags",
        "first",
        "lengths_buffer",
        "buffer_class",
        "_arrays",
        "_lock",
    )

    def arrays(self) -> "MachineArrays":
        """The numpy tables, built once per machine (machines are shared
        between threads through the cache)."""
        a = self._arrays
        if a is None:
            with self._lock:
                a = self._arrays
                if a is None:
                    a = self._arrays = MachineArrays(self)
        return a


class MachineArrays:
    """A machine as numpy tables over ``M = S + PAD + 1`` states: the S
    states, ``PAD`` failure states that a transition byte may reach past the
    last one, and a sink (index ``S + PAD``) that failure states lead to.

    Per state: ``kind`` int8; ``nxt`` int64 (failure states lead to the
    sink); ``implicit``, ``is_record`` (closes a record), ``has_buffer``,
    ``is_nonproto``, ``is_varint`` bool; ``width``, ``bufidx`` (0 where
    none), ``head_len``, ``tag_len`` int64; ``buffer_key`` uint32,
    ``bufidx << 24``; ``head_src`` int64, where the
    head of each state starts in the ``heads`` block (``HEAD_SLOT`` bytes
    a state, uint8 ``(M * HEAD_SLOT,)``); ``tagr`` uint8 ``(M, 5)``, tags
    right-aligned (heads of submessages end with them); ``delta`` int8,
    +1 for the end of a submessage and -1 for its start, and ``is_event``
    (bool) where it is not 0; ``chain_end``,
    ``chain_len``, ``chain_delta`` int64: the explicit state that ends the
    chain of implicit moves from each state, how many states the chain
    visits, and the sum of their ``delta``.
    """

    __slots__ = (
        "S",
        "M",
        "first",
        "kind",
        "nxt",
        "implicit",
        "width",
        "bufidx",
        "buffer_key",
        "head_len",
        "head_src",
        "heads",
        "tag_len",
        "tagr",
        "is_record",
        "has_buffer",
        "is_nonproto",
        "is_varint",
        "delta",
        "is_event",
        "has_submessages",
        "chain_end",
        "chain_len",
        "chain_delta",
        "buffer_class",
        "lengths_buffer",
    )

    def __init__(self, m: Machine):
        S = m.S
        M = S + PAD + 1
        sink = S + PAD
        self.S, self.M, self.first = S, M, m.first
        self.kind = kind = np.array(m.kind + [K_FAIL], dtype=np.int8)
        self.nxt = np.array(m.nxt + [sink], dtype=np.int64)
        self.nxt[S:] = sink
        self.implicit = np.array(m.implicit + [False], dtype=bool)
        self.width = np.array(m.width + [0], dtype=np.int64)
        self.bufidx = np.maximum(np.array(m.bufidx + [-1], dtype=np.int64), 0)
        # Sort keys of fields by buffer (buffer << 24), for machines with
        # fewer than 256 buffers.
        self.buffer_key = (np.minimum(self.bufidx, 255).astype(np.uint32)) << 24
        self.head_len = np.array([len(h) for h in m.heads] + [0], dtype=np.int64)
        self.head_src = np.arange(M, dtype=np.int64) * HEAD_SLOT
        heads = np.zeros((M, HEAD_SLOT), dtype=np.uint8)
        if S:
            heads[:S] = np.frombuffer(b"".join(h.ljust(HEAD_SLOT, b"\0") for h in m.heads[:S]), dtype=np.uint8).reshape(
                S, HEAD_SLOT
            )
        self.heads = heads.reshape(-1)
        self.tag_len = np.zeros(M, dtype=np.int64)
        self.tag_len[:S] = [len(t) for t in m.tags]
        self.tagr = np.zeros((M, 5), dtype=np.uint8)
        if S:
            self.tagr[:S] = np.frombuffer(b"".join(t.rjust(5, b"\0") for t in m.tags), dtype=np.uint8).reshape(S, 5)
        self.is_record = (kind == K_MSGSTART) | (kind == K_NONPROTO)
        self.has_buffer = np.array([b >= 0 for b in m.bufidx] + [False], dtype=bool)
        self.is_nonproto = kind == K_NONPROTO
        self.is_varint = kind == K_VARINT
        self.delta = (kind == K_SUBEND).view(np.int8) - (kind == K_SUBSTART).view(np.int8)
        self.is_event = self.delta != 0
        self.has_submessages = bool(self.is_event.any())
        self.buffer_class = np.array(m.buffer_class, dtype=np.int8)
        self.lengths_buffer = m.lengths_buffer
        self._close_implicit_chains()

    def _close_implicit_chains(self) -> None:
        """``chain_end``, ``chain_len`` and ``chain_delta`` by pointer
        doubling (the parser has already refused loops of implicit moves;
        the check here only backs it up)."""
        M = self.M
        imp = self.implicit
        succ = np.where(imp, self.nxt, np.arange(M, dtype=np.int64))
        # What the moves from a state to ``succ`` add: states, delta.
        steps = imp.astype(np.int64)
        dsum = np.where(imp, self.delta.take(succ), 0).astype(np.int64)
        if imp.any():
            for _ in range(max(1, (self.S + 1).bit_length() + 1)):
                steps = steps + steps[succ]
                dsum = dsum + dsum[succ]
                succ = succ[succ]
            if imp[succ].any():
                i = int(np.argmax(imp[succ]))
                fail(f"states contain a loop of implicit transitions through state {i}")
        self.chain_end = succ
        self.chain_len = steps + 1
        self.chain_delta = dsum + self.delta


# What a state does, by tag (and subtype for varints: ``tag | subtype << 32``):
# ``(kind, width, head, tag bytes, has a buffer)``. Valid keys only.
_STATE_INFO: dict = {}


def _state_info(key: int, i: int, hwhere: str):
    raw, subtype = key & 0xFFFFFFFF, key >> 32
    if raw < 4:
        info = ((K_NOOP, K_NONPROTO, K_SUBSTART, K_MSGSTART)[raw], 0, b"", b"", raw == _ID_NONPROTO)
    else:
        t = raw - (_SUBMESSAGE_WIRE_TYPE - 2) if raw & 7 == _SUBMESSAGE_WIRE_TYPE else raw
        if t < 8 or t & 7 > 5:
            fail(f"state {i} has invalid tag {raw} ({hwhere})")
        tb = encode_varint(t)
        wt = t & 7
        if raw != t:
            info = (K_SUBEND, 0, b"", tb, False)
        elif wt == 0:
            if subtype > _SUBTYPE_INLINE_MAX:
                fail(f"state {i} has invalid varint subtype {subtype} ({hwhere})")
            if subtype >= _SUBTYPE_INLINE0:
                info = (K_COPY, 0, tb + bytes((subtype - _SUBTYPE_INLINE0,)), tb, False)
            else:
                info = (K_VARINT, subtype + 1, tb, tb, True)
        elif wt == 1 or wt == 5:
            info = (K_FIXED, 8 if wt == 1 else 4, tb, tb, True)
        elif wt == 2:
            info = (K_STRING, 0, tb, tb, True)
        else:
            info = (K_COPY, 0, tb, tb, False)
    if len(_STATE_INFO) < 1 << 16:
        _STATE_INFO[key] = info
    return info


# Parsed machines of small headers, keyed by the header's bytes from the
# state machine on (plus the buffer count its indices are checked against).
_MACHINES: dict = {}
_MAX_MACHINES = 256
_MAX_MACHINE_BYTES = 4096
_MACHINES_LOCK = threading.Lock()


def parse_machine(h: bytes, hnp: np.ndarray, hp: int, hwhere: str, num_buffers: int) -> Machine:
    """The state machine part of decompressed header ``h`` (``hnp``: the
    same as a uint8 array), from ``hp`` to its end; cached for small
    headers. Raises ``TransposeError`` on any invalid field."""
    key = (h[hp:], num_buffers)
    m = _MACHINES.get(key)
    if m is None:
        m = _parse_machine(h, hnp, hp, hwhere, num_buffers)
        if len(h) - hp <= _MAX_MACHINE_BYTES:
            with _MACHINES_LOCK:
                if len(_MACHINES) >= _MAX_MACHINES:
                    _MACHINES.clear()
                _MACHINES[key] = m
    return m


def _parse_machine(h: bytes, hnp: np.ndarray, hp: int, hwhere: str, num_buffers: int) -> Machine:
    hn = len(h)
    S, hp = read_varint32(h, hp, "state machine size", hwhere)
    tags, hp = read_varint_list(h, hnp, hp, S, 5, "state tags", hwhere)
    nexts, hp = read_varint_list(h, hnp, hp, S, 5, "next states", hwhere)
    num_subtypes = sum(1 for t in tags if t >= 8 and t & 7 == 0)
    if num_subtypes > hn - hp:
        fail(f"subtypes: {num_subtypes} bytes needed at {hwhere} byte {hp}, {hn - hp} left")
    subtypes = iter(h[hp : hp + num_subtypes])
    hp += num_subtypes
    infos = []
    get = _STATE_INFO.get
    for i, t in enumerate(tags):
        key = t | next(subtypes) << 32 if t >= 8 and t & 7 == 0 else t
        info = get(key)
        if info is None:
            info = _state_info(key, i, hwhere)
        infos.append(info)
    kind, width, heads, tag_bytes, has_buffer = map(list, zip(*infos)) if infos else ([], [], [], [], [])
    indices, hp = read_varint_list(h, hnp, hp, sum(has_buffer), 5, "buffer indices", hwhere)
    if indices and max(indices) >= num_buffers:
        fail(f"buffer index {max(indices)} out of range: {num_buffers} buffers ({hwhere})")
    it = iter(indices)
    bufidx = [next(it) if hb else -1 for hb in has_buffer]
    first, hp = read_varint32(h, hp, "first state", hwhere)
    if hp != hn:
        fail(f"header has {hn - hp} unexpected bytes at {hwhere} byte {hp}")
    if first >= S:
        fail(f"first state {first} out of range: {S} states ({hwhere})")
    implicit = [x >= S for x in nexts]
    nxt = [x - S if x >= S else x for x in nexts]
    for i, x in enumerate(nxt):
        if x >= S:
            fail(f"state {i}: next state {x} out of range: {S} states ({hwhere})")

    # In what the encoder writes, every buffer belongs to one field, so all
    # states reading it read it the same way; the non-proto lengths buffer
    # (the last one) is read by no state. Other data is refused.
    lengths_buffer = -1
    cls = [C_NONE] * num_buffers
    if K_NONPROTO in kind:
        if num_buffers == 0:
            fail("non-proto records but no buffer for their lengths")
        lengths_buffer = num_buffers - 1
        cls[lengths_buffer] = C_LENGTHS
    for k, b in zip(kind, bufidx):
        if b >= 0:
            c = _CLASS_OF_KIND[k]
            if cls[b] == C_NONE:
                cls[b] = c
            elif cls[b] != c:
                fail(f"buffer {b} is read by states of different kinds ({hwhere})")
    # Loops of implicit transitions (upstream's ContainsImplicitLoop).
    loop_id = [0] * S
    for i in range(S):
        if loop_id[i]:
            continue
        j = i
        loop_id[j] = i + 1
        while implicit[j]:
            j = nxt[j]
            if loop_id[j] == i + 1:
                fail(f"states contain a loop of implicit transitions through state {j} ({hwhere})")
            if loop_id[j]:
                break
            loop_id[j] = i + 1

    m = Machine()
    m.S = S
    m.kind = kind + [K_FAIL] * PAD
    m.nxt = nxt + [0] * PAD
    m.implicit = implicit + [False] * PAD
    m.width = width + [0] * PAD
    m.bufidx = bufidx + [-1] * PAD
    m.heads = heads + [b""] * PAD
    m.tags = tag_bytes
    m.first = first
    m.lengths_buffer = lengths_buffer
    m.buffer_class = cls
    m._arrays = None
    m._lock = threading.Lock()
    return m
