"""From transition bytes to the sequence of states visited, a block at a
time.

After a state the machine moves to ``next_node`` (an implicit transition)
or reads a transition byte: ``next_node + (byte >> 2)``, then ``byte & 3``
more moves to ``next_node + 0`` (upstream: ``transpose_decoder.cc``,
``Decode``). Every move visits the chain of implicit moves that follows it.

The move for one byte depends only on the current base (``next_node`` of
the explicit state reached) and the byte, so the machine is a table
automaton on bases. It runs in C: ``accumulate(bytes, getitem)`` over rows
that are Python lists whose entry ``b`` is the row reached by byte ``b``
and whose entry 256 is the row's number. The automaton runs over a
chunk's transitions first, so that each distinct (row, byte) pair of the
chunk is expanded once into the states its moves visit (their total
checked against the visit budget before they are spelled out: a pair's
chain of implicit moves may be long); each block's visits are then a
gather of those expansions. Machines too large for tables run a block at
a time, and expand the pairs of each block.
"""

from __future__ import annotations

import itertools
import operator

import numpy as np

from .errors import fail
from .gather import gather
from .machine import K_FAIL, PAD, MachineArrays

__all__ = ["visit_blocks", "expand_chains"]

# Python-list automaton tables are built for at most this many bases.
MAX_TABLE_STATES = 1 << 13
# Expansions of (row, byte) pairs are kept in tables of at most this many.
_MAX_PAIR_TABLE = 1 << 16
# Transition bytes read for the first block; later blocks are sized from
# the visits per byte seen so far, with at least MIN_BLOCK_BYTES.
FIRST_BLOCK_BYTES = 4096
MIN_BLOCK_BYTES = 256
# Table automata run over a chunk's transitions this many bytes per C call
# (each holds the GIL throughout) before its blocks are expanded.
_RUN_BYTES = 1 << 16


def expand_chains(A: MachineArrays, starts: np.ndarray) -> np.ndarray:
    """The states visited from each of ``starts`` through its chain of
    implicit moves, concatenated; int64."""
    nxt, chain_len = A.nxt, A.chain_len
    lens = chain_len.take(starts)
    longest = int(lens.max()) if lens.size else 1
    if longest == 1:
        return starts
    total = int(lens.sum())
    out_off = np.cumsum(lens) - lens
    if longest <= 64:
        # Each distinct chain spelled out once, a step per round.
        mark = np.zeros(A.M, dtype=bool)
        mark[starts] = True
        uniq = np.flatnonzero(mark)
        ulen = chain_len.take(uniq)
        uoff = np.cumsum(ulen) - ulen
        table = np.empty(int(ulen.sum()), dtype=np.int64)
        cur, pos, rem = uniq, uoff, ulen
        while cur.size:
            table[pos] = cur
            keep = rem > 1
            cur, pos, rem = nxt[cur[keep]], pos[keep] + 1, rem[keep] - 1
        where_of = np.zeros(A.M, dtype=np.int64)
        where_of[uniq] = uoff
        out = np.empty(total, dtype=np.int64)
        gather(table, where_of.take(starts), lens, out)
        return out
    # Long chains: step j is next_node applied j times, by doubling.
    v = np.repeat(starts, lens)
    j = np.arange(total) - np.repeat(out_off, lens)
    jump = np.where(A.implicit, nxt, np.arange(A.M))
    bit = 0
    while (1 << bit) < longest:
        sel = ((j >> bit) & 1).astype(bool)
        v[sel] = jump[v[sel]]
        jump = jump[jump]
        bit += 1
    return v


class _Automaton:
    """The table automaton of one chunk's machine, for the bytes its
    transitions use. ``run`` gives the row before each byte and after the
    last; ``bases[row]`` is the row's base. Rows are Python lists that
    reference each other: :meth:`close` breaks the cycles."""

    def __init__(self, A: MachineArrays, trans: bytes, trans_where: str, beta0: int):
        self.A = A
        self.where = trans_where
        nxt, chain_end, S = A.nxt, A.chain_end, A.S
        sink = S + PAD
        explicit = np.flatnonzero(~A.implicit[:S])
        bases = np.unique(np.concatenate((nxt.take(explicit), [beta0])))
        D = bases.size
        self.rows = None
        if D > MAX_TABLE_STATES:
            # Too large for tables: every state its own row, a Python loop.
            self.D = S + PAD
            self.bases = np.arange(S + PAD + 1, dtype=np.int64)
            self.start = beta0
            self._nxt = nxt.tolist()
            self._end = chain_end.tolist()
            self._kind = A.kind.tolist()
            return
        self.D = D
        self.bases = bases
        row_of = np.full(sink + 1, D, dtype=np.int64)
        row_of[bases] = np.arange(D)
        used = np.flatnonzero(np.bincount(np.frombuffer(trans, dtype=np.uint8), minlength=256))
        cur = nxt.take(chain_end.take(bases[:, None] + (used >> 2)[None, :]))
        reps = used & 3
        for j in (1, 2, 3):
            cols = reps >= j
            if cols.any():
                cur[:, cols] = nxt.take(chain_end.take(cur[:, cols]))
        # Rows have a column per byte value the transitions use (bytes are
        # mapped to columns once, with ``translate``) and the row's number.
        U = used.size
        table = np.full((D + 1, U), D, dtype=np.int64)
        table[:D] = row_of.take(cur)
        rows = [[None] * U + [i] for i in range(D + 1)]
        cells = table.ravel().tolist()
        flat = operator.itemgetter(*cells)(rows) if len(cells) > 1 else (rows[cells[0]],)
        for i, row in enumerate(rows):
            row[:U] = flat[U * i : U * (i + 1)]
        column = bytearray(256)
        for i, b in enumerate(used.tolist()):
            column[b] = i
        self.columns = trans.translate(column)
        self.U = U
        self.rows = rows
        self.start = int(row_of[beta0])

    def run(self, trans: bytes, t0: int, t1: int, row: int) -> np.ndarray:
        """Rows before each of bytes ``t0:t1`` of the transitions and after
        the last, from ``row``; uint8 when there are fewer than 256 rows,
        else int64."""
        if self.rows is None:
            return self._run_slow(trans[t0:t1], row, t0)
        walk = itertools.accumulate(self.columns[t0:t1], operator.getitem, initial=self.rows[row])
        if self.D < 256:
            seq = np.frombuffer(bytes(map(operator.itemgetter(self.U), walk)), dtype=np.uint8)
        else:
            seq = np.fromiter(map(operator.itemgetter(self.U), walk), dtype=np.int64, count=t1 - t0 + 1)
        if int(seq.max()) == self.D:
            k = t0 + int(np.argmax(seq == self.D)) - 1
            fail(f"transition byte {k} of the {self.where} leads outside the {self.A.S} states")
        return seq

    def _run_slow(self, tb: bytes, beta: int, t0: int) -> np.ndarray:
        nxt, end, kind = self._nxt, self._end, self._kind
        seq = np.empty(len(tb) + 1, dtype=np.int64)
        seq[0] = beta
        for i, t in enumerate(tb):
            e = end[beta + (t >> 2)]
            for _ in range(t & 3):
                if kind[e] == K_FAIL:
                    break
                e = end[nxt[e]]
            if kind[e] == K_FAIL:
                fail(f"transition byte {t0 + i} of the {self.where} leads outside the {self.A.S} states")
            beta = seq[i + 1] = nxt[e]
        return seq

    def close(self) -> None:
        if self.rows is not None:
            for row in self.rows:
                row.clear()
            self.rows = None


class _Expansions:
    """The states each (row, byte) pair visits, expanded once per chunk:
    ``states[off[pid]:off[pid] + length[pid]]`` for ``pid = row << 8 |
    byte``, with ``delta[pid]`` the submessages they open less those they
    close. Tables indexed by ``pid`` while they are small (table automata:
    every pair of the chunk is expanded first, by :meth:`add_all`), else
    (the slow automaton) pairs are found and expanded per block."""

    def __init__(self, A: MachineArrays, auto: _Automaton):
        self.A = A
        self.auto = auto
        npairs = (auto.D + 1) << 8
        self.table = npairs <= _MAX_PAIR_TABLE
        if self.table:
            self.off = np.zeros(npairs, dtype=np.int64)
            self.length = np.zeros(npairs, dtype=np.int64)
            self.delta = np.zeros(npairs, dtype=np.int64)
            self.states = np.zeros(0, dtype=np.int64)

    def _expand(self, pairs: np.ndarray, budget: int):
        """``(states, lengths, deltas)`` of distinct ``pairs``; raises
        before spelling them out when they visit more than ``budget``
        states together."""
        A = self.A
        nxt, chain_end = A.nxt, A.chain_end
        pb = pairs & 255
        moves = np.empty((pairs.size, 4), dtype=np.int64)
        moves[:, 0] = self.auto.bases.take(pairs >> 8) + (pb >> 2)
        for j in (1, 2, 3):
            moves[:, j] = nxt.take(chain_end.take(moves[:, j - 1]))
        taken = np.arange(4)[None, :] <= (pb & 3)[:, None]
        starts = moves[taken]
        owner = np.repeat(np.arange(pairs.size), taken.sum(axis=1))
        lengths = np.bincount(owner, weights=A.chain_len.take(starts), minlength=pairs.size).astype(np.int64)
        if int(lengths.sum()) > budget:
            fail("state machine visits more states than the records can hold")
        deltas = None
        if A.has_submessages:
            deltas = np.bincount(owner, weights=A.chain_delta.take(starts), minlength=pairs.size).astype(np.int64)
        return expand_chains(A, starts), lengths, deltas

    def add_all(self, seq: np.ndarray, t: np.ndarray, budget: int) -> None:
        """Expand at once every (row, byte) pair of the rows ``seq``
        before the transition bytes ``t`` (uint8): one expansion per chunk,
        not one per block (table automata only). Each pair occurs at least
        once, so their visits together are at most the chunk's: more than
        ``budget`` raise before any is spelled out."""
        seen = np.zeros(self.off.size, dtype=bool)
        for a in range(0, t.size, _RUN_BYTES):
            pid = seq[a : a + _RUN_BYTES].astype(np.int64)
            pid <<= 8
            pid |= t[a : a + _RUN_BYTES]
            seen[pid] = True
        pairs = np.flatnonzero(seen)
        states, lengths, deltas = self._expand(pairs, budget)
        at = np.cumsum(lengths)
        at -= lengths
        self.off[pairs] = at
        self.length[pairs] = lengths
        if deltas is not None:
            self.delta[pairs] = deltas
        self.states = states

    def block(self, seq: np.ndarray, t: np.ndarray, budget: int):
        """The visits of one block of transition bytes ``t`` (uint8), given
        the rows before each (``seq``); more than ``budget`` of them raise.

        Returns ``(visits, lens, deltas)``: int64, and for each byte the
        number of visits it makes and (machines with submessages; else
        ``None``) the submessages they open less those they close."""
        pid = seq.astype(np.int64)
        pid <<= 8
        pid |= t
        if self.table:
            off = self.off.take(pid)  # every pair of the chunk: add_all
            lens = self.length.take(pid)
            deltas = self.delta.take(pid) if self.A.has_submessages else None
            states = self.states
        else:
            pairs, pidx = np.unique(pid, return_inverse=True)
            states, lengths, dl = self._expand(pairs, budget)
            at = np.cumsum(lengths)
            at -= lengths
            off = at.take(pidx)
            lens = lengths.take(pidx)
            deltas = dl.take(pidx) if dl is not None else None
        total = int(lens.sum())
        if total > budget:
            fail("state machine visits more states than the records can hold")
        out = np.empty(total, dtype=np.int64)
        gather(states, off, lens, out)
        return out, lens, deltas


def visit_blocks(A: MachineArrays, trans: bytes, trans_where: str, max_visits: int, block_visits: int):
    """Yield the states visited, in order, as int64 arrays of about
    ``block_visits`` each (the first starts with the chain from the first
    state). Each but the last ends where no submessage is open (found per
    transition byte, from the submessages each one's moves open and
    close), so that blocks decode on their own. Raises ``TransposeError``
    when a transition leads outside the machine or the visits exceed
    ``max_visits``."""
    head = expand_chains(A, np.array([A.first], dtype=np.int64))
    total = head.size
    T = len(trans)
    if T == 0:
        yield head
        return
    subs = A.has_submessages
    # Visits not yet yielded (a submessage is open at their end), and the
    # number of submessages open there.
    pending = [head]
    depth = int(A.delta.take(head).sum()) if subs else 0
    auto = _Automaton(A, trans, trans_where, int(A.nxt[A.chain_end[A.first]]))
    pairs = _Expansions(A, auto)
    try:
        row = auto.start
        tall = np.frombuffer(trans, dtype=np.uint8)
        every = None
        if pairs.table:
            # The rows before every byte first, so that each distinct pair
            # of the chunk is expanded in one go.
            runs = []
            for a in range(0, T, _RUN_BYTES):
                b = min(T, a + _RUN_BYTES)
                seq = auto.run(trans, a, b, row)
                row = int(seq[-1])
                runs.append(seq[:-1])
            runs.append(seq[-1:])
            every = np.concatenate(runs)
            del runs, seq
            pairs.add_all(every[:-1], tall, max_visits - total)
        t0 = 0
        step = FIRST_BLOCK_BYTES
        while t0 < T:
            t1 = min(T, t0 + step)
            if every is not None:
                seq = every[t0 : t1 + 1]
            else:
                seq = auto.run(trans, t0, t1, row)
                row = int(seq[-1])
            vis, lens, deltas = pairs.block(seq[:-1], tall[t0:t1], max_visits - total)
            total += vis.size
            per_byte = max(1.0, vis.size / (t1 - t0))
            step = max(MIN_BLOCK_BYTES, int(block_visits / per_byte))
            t0 = t1
            if not subs:
                yield vis if not pending else np.concatenate(pending + [vis])
                pending = []
                continue
            open_after = np.cumsum(deltas)
            open_after += depth
            closed = np.flatnonzero(open_after <= 0)
            if closed.size == 0:
                pending.append(vis)
                depth = int(open_after[-1])
                continue
            last = int(closed[-1])
            cut = int(lens[: last + 1].sum())
            yield vis[:cut] if not pending else np.concatenate(pending + [vis[:cut]])
            pending = [vis[cut:]] if cut < vis.size else []
            depth = int(open_after[-1] - open_after[last])
        if pending:
            yield pending[0] if len(pending) == 1 else np.concatenate(pending)
    finally:
        auto.close()
