"""An O(1)-memory keyed permutation of ``[0, N)`` for every ``N >= 1``.

A shuffled epoch over ``N`` records needs a bijection ``[0, N) -> [0, N)``
that can be evaluated at any position without materialising it: the
checkpoint then holds only ``(seed, epoch, position)`` whatever ``N`` is, and
any host can compute its slice of the order without talking to the others.

Construction
------------
A balanced Feistel network over ``w`` bits, ``w`` the smallest *even* width
with ``2**w >= N`` (at least 2), is a bijection of ``[0, 2**w)`` whatever its
round function is, because each round ``(L, R) -> (R, L ^ F_r(R))`` is
invertible. *Cycle walking* restricts it to ``[0, N)``: apply the network
again to any output ``>= N`` until it lands below ``N``. Following the cycle
of a bijection through values ``>= N`` always returns to ``[0, N)``, and the
first value it meets there is distinct for distinct starting points, so the
restriction is again a bijection; this holds for every ``N`` (Grain's
``index_shuffle``, which is meant to be the same construction, drops one
record and repeats another for ``N = 2**k + 1``, ``k`` even and ``>= 16``).
Because ``2**w < 4 N``, at most three of every four outputs need another step
and the expected walk is under four network evaluations.

The round function is the splitmix64 finaliser (a good 64-bit mixer) applied
to ``R ^ round_key``, truncated to ``w / 2`` bits. Everything is ``uint64``
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
            from :func:`epoch_round_keys`.

    Calling the object maps positions to permuted positions; :meth:`inverse`
    maps them back. Both accept an int or an integer array of any shape with
    values in ``[0, n)`` and return ``int64`` of the same shape (an ``int`` for
    an int). State is ``n`` and the keys only: memory does not
    depend on ``n``.
    """

    __slots__ = ("n", "half_bits", "_mask", "_shift", "_keys")

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
        # Smallest even width covering [0, n), at least 2 bits so both halves
        # are non-empty.
        width = max(2, (n - 1).bit_length())
        width += width & 1
        self.half_bits = width // 2
        self._mask = np.uint64((1 << self.half_bits) - 1)
        self._shift = np.uint64(self.half_bits)
        self._keys = keys

    def __repr__(self) -> str:
        return f"FeistelPermutation(n={self.n}, rounds={self._keys.size})"

    # The network on [0, 2**width). Arrays are uint64; numpy wraps on
    # overflow for arrays, which is the modular arithmetic the mixer wants.
    def _round(self, right: np.ndarray, key: np.uint64) -> np.ndarray:
        z = right ^ key
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return (z ^ (z >> _S31)) & self._mask

    def _forward(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._shift, x & self._mask
        for key in self._keys:
            left, right = right, left ^ self._round(right, key)
        return (left << self._shift) | right

    def _backward(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._shift, x & self._mask
        for key in self._keys[::-1]:
            left, right = right ^ self._round(left, key), left
        return (left << self._shift) | right

    def _walk(self, positions, step) -> np.ndarray:
        scalar = np.ndim(positions) == 0
        x = np.asarray(positions)
        if x.dtype.kind not in "iu":
            raise ValueError(f"positions must be integers, got dtype {x.dtype}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= self.n):
            raise ValueError(f"positions must be in [0, {self.n}), got range [{x.min()}, {x.max()}]")
        x = x.astype(np.uint64)
        out = step(x)
        n = np.uint64(self.n)
        outside = np.flatnonzero(out >= n)
        # Cycle walking: only the stragglers are re-encrypted, so a batch costs
        # about one network evaluation plus a few on shrinking subsets.
        while outside.size:
            flat = out.reshape(-1)
            flat[outside] = step(flat[outside])
            outside = outside[flat[outside] >= n]
        out = out.astype(np.int64)
        return out.reshape(()).item() if scalar else out

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
