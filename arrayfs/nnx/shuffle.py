"""An O(1)-memory keyed permutation of ``[0, N)`` for every ``N >= 1``.

A shuffled epoch over ``N`` records needs a bijection ``[0, N) -> [0, N)``
that can be evaluated at any position without materialising it: the
checkpoint then holds only ``(seed, epoch, position)`` whatever ``N`` is, and
any host can compute its slice of the order without talking to the others.

Construction
------------
A Feistel network over ``w`` bits, ``w`` the smallest width with
``2**w >= N`` (at least 2), is a bijection of ``[0, 2**w)`` whatever its round
function is, because each round ``(L, R) -> (R, L ^ F_r(R))`` is invertible
(for odd ``w`` the halves differ by one bit and swap sizes each round, as in
FFX). *Cycle walking* restricts it to ``[0, N)``: apply the network
again to any output ``>= N`` until it lands below ``N``. Following the cycle
of a bijection through values ``>= N`` always returns to ``[0, N)``, and the
first value it meets there is distinct for distinct starting points, so the
restriction is again a bijection; this holds for every ``N`` (Grain's
``index_shuffle``, which is meant to be the same construction, drops one
record and repeats another for ``N = 2**k + 1``, ``k`` even and ``>= 16``).
Because ``2**w < 2 N`` (for ``N >= 3``), at most half of the outputs need
another step and the expected walk is under two network evaluations.

The round function is the splitmix64 finaliser (a good 64-bit mixer) applied
to ``R ^ round_key``, truncated to the width of ``L``. Everything is ``uint64``
numpy arithmetic, vectorised over a batch of positions.

Keys: the seed/epoch rule
-------------------------
The round keys of epoch ``e`` under seed ``s`` are the bytes of
``blake2b(pack('<QQ', s, e), person=b'arrayfs-shuffle1')``. The packed input
is injective in ``(s, e)``, so distinct ``(seed, epoch)`` pairs get distinct,
unrelated keys (up to a blake2b collision). Grain derives the epoch seed as
``seed + epoch``, so its seed 42 epoch 1 is the same order as seed 43 epoch 0;
here those are two independent orders. (For tiny ``N`` there are only ``N!``
orders, so two keys can still give the same order by chance; for ``N = 2`` it
is a coin flip.)
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

__all__ = ["FeistelPermutation", "epoch_round_keys", "epoch_permutation", "NUM_ROUNDS"]

#: Feistel rounds. Four rounds of a pseudo-random function already give a
#: strong pseudo-random permutation (Luby-Rackoff); six leave margin for a
#: round function that is a fast mixer rather than a cryptographic PRF.
NUM_ROUNDS = 6

_U64_MAX = (1 << 64) - 1
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_PIECE = 1 << 15


def epoch_round_keys(seed: int, epoch: int, rounds: int = NUM_ROUNDS) -> np.ndarray:
    """Round keys for epoch ``epoch`` under ``seed`` (see the module's rule).

    Args:
        seed: integer in ``[0, 2**64)``.
        epoch: integer in ``[0, 2**64)``.
        rounds: number of round keys, 1 to 8.

    Returns:
        ``np.ndarray`` of shape ``(rounds,)``, dtype ``uint64``.

    Raises:
        ValueError: ``seed`` or ``epoch`` out of range, or ``rounds`` not in
            ``[1, 8]``.
    """
    seed, epoch = _check_u64("seed", seed), _check_u64("epoch", epoch)
    if not 1 <= rounds <= 8:
        raise ValueError(f"rounds must be in [1, 8], got {rounds}")
    digest = hashlib.blake2b(
        struct.pack("<QQ", seed, epoch), digest_size=8 * rounds, person=b"arrayfs-shuffle1"
    ).digest()
    return np.frombuffer(digest, dtype="<u8").astype(np.uint64)


def _check_u64(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


class FeistelPermutation:
    """A keyed bijection of ``[0, n)`` evaluated pointwise in O(1) memory.

    Args:
        n: domain size in elements, ``1 <= n <= 2**63``.
        round_keys: ``uint64`` array of shape ``(rounds,)``, for example
            from :func:`epoch_round_keys`; an even count keeps the bit layout
            of the two halves the same after the last round.

    Calling the object maps positions to permuted positions; :meth:`inverse`
    maps them back. Both accept an int or an integer array of any shape with
    values in ``[0, n)`` and return ``int64`` of the same shape (an ``int`` for
    an int). State is ``n`` and the keys only: memory does not depend on
    ``n``.

    Raises:
        ValueError: ``n`` outside ``[1, 2**63]``, no keys, or (on call)
            positions outside ``[0, n)`` or not integers.
    """

    __slots__ = ("n", "width", "_rounds", "_keys")

    def __init__(self, n: int, round_keys: np.ndarray):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"n must be an integer, got {n!r}")
        n = int(n)
        if not 1 <= n <= 1 << 63:
            raise ValueError(f"n must be in [1, 2**63], got {n}")
        keys = np.asarray(round_keys, dtype=np.uint64).reshape(-1)
        if keys.size == 0:
            raise ValueError("need at least one round key")
        self.n = n
        # The smallest width covering [0, n) (at least 2 bits so both halves
        # are non-empty). It may be odd: the halves then differ by one bit and
        # swap sizes every round (an unbalanced, alternating Feistel network
        # as in FFX), which keeps 2**width < 2 n so that at most half of the
        # outputs need another cycle-walking step. An even width would allow
        # up to 3/4 and roughly double the longest walk in a batch.
        self.width = max(2, (n - 1).bit_length())
        hi, lo = self.width // 2, self.width - self.width // 2
        rounds = []
        for i, key in enumerate(keys):
            top, low = (hi, lo) if i % 2 == 0 else (lo, hi)
            rounds.append((
                np.uint64(top), np.uint64(low),
                np.uint64((1 << top) - 1), np.uint64((1 << low) - 1), np.uint64(key),
            ))
        self._rounds = tuple(rounds)
        self._keys = keys

    def __repr__(self) -> str:
        return f"FeistelPermutation(n={self.n}, rounds={self._keys.size})"

    # One round on width-bit values laid out as (L: `top` high bits, R: `low`
    # low bits) gives (R: `low` high bits, L ^ F(R): `top` low bits). numpy wraps uint64
    # arrays on overflow, which is the modular arithmetic the mixer wants.
    @staticmethod
    def _mix(right: np.ndarray, key: np.uint64, mask: np.uint64) -> np.ndarray:
        z = right ^ key
        z ^= z >> _S30
        z *= _M1
        z ^= z >> _S27
        z *= _M2
        z ^= z >> _S31
        z &= mask
        return z

    def _forward(self, x: np.ndarray) -> np.ndarray:
        for top, low, mask_top, mask_low, key in self._rounds:
            right = x & mask_low
            left = x >> low
            left ^= self._mix(right, key, mask_top)
            right <<= top
            right |= left
            x = right
        return x

    def _backward(self, y: np.ndarray) -> np.ndarray:
        for top, low, mask_top, _, key in reversed(self._rounds):
            right = y >> top
            left = y & mask_top
            left ^= self._mix(right, key, mask_top)
            left <<= low
            left |= right
            y = left
        return y

    def _walk(self, positions, step) -> np.ndarray:
        scalar = np.ndim(positions) == 0
        x = np.asarray(positions)
        if x.dtype.kind not in "iu":
            raise ValueError(f"positions must be integers, got dtype {x.dtype}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= self.n):
            raise ValueError(
                f"positions must be in [0, {self.n}), got range [{x.min()}, {x.max()}]"
            )
        flat = x.astype(np.uint64).reshape(-1)
        # Large inputs go through in pieces that stay in the CPU cache: the
        # network makes ~70 passes over its input.
        out = np.concatenate([
            self._walk_piece(flat[i: i + _PIECE], step) for i in range(0, flat.size, _PIECE)
        ]) if flat.size > _PIECE else self._walk_piece(flat, step)
        out = out.astype(np.int64).reshape(x.shape)
        return int(out) if scalar else out

    def _walk_piece(self, x: np.ndarray, step) -> np.ndarray:
        out = step(x)
        n = np.uint64(self.n)
        outside = np.flatnonzero(out >= n)
        # Cycle walking: only the stragglers are stepped again, so a batch
        # costs about one network evaluation plus a few on shrinking subsets.
        while outside.size:
            out[outside] = step(out[outside])
            outside = outside[out[outside] >= n]
        return out

    def __call__(self, positions):
        """Permuted positions: ``int64`` array of the input's shape (or an int)."""
        return self._walk(positions, self._forward)

    def inverse(self, positions):
        """Inverse permutation: ``self.inverse(self(x)) == x``."""
        return self._walk(positions, self._backward)


def epoch_permutation(n: int, seed: int, epoch: int) -> FeistelPermutation:
    """The order of epoch ``epoch`` of ``n`` elements under ``seed``.

    Position ``p`` of the epoch reads element ``epoch_permutation(n, s, e)(p)``.

    Raises:
        ValueError: ``n < 1``, or ``seed``/``epoch`` outside ``[0, 2**64)``.
    """
    return FeistelPermutation(n, epoch_round_keys(seed, epoch))
