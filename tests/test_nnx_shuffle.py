"""The keyed Feistel permutation (arrayfs.nnx.shuffle) and the epoch order.

Oracle: ``np.unique`` over the whole output of an epoch (a permutation of
``[0, N)`` has exactly ``N`` distinct values in range), the inverse, and
Grain's ``index_shuffle`` for the flaw ours must not share.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayfs.nnx.order import BLOCK, EpochOrder, even_split
from arrayfs.nnx.shuffle import FeistelPermutation, epoch_permutation, epoch_round_keys

SIZES = [1, 2, 3, 1000, 65_537, 262_145, 1_048_577]


def _is_permutation(values: np.ndarray, n: int) -> bool:
    u = np.unique(values)
    return u.size == n and u[0] == 0 and u[-1] == n - 1


@pytest.mark.parametrize("n", SIZES)
def test_every_epoch_is_a_permutation(n):
    if n > 100_000:  # ~0.3 s each on one core
        pairs = [(0, 0), (42, 1), (2**64 - 1, 7)]
    else:
        pairs = [(s, e) for s in (0, 1, 42, 43, 12345, 2**64 - 1) for e in (0, 1)]
    positions = np.arange(n)
    for seed, epoch in pairs:
        out = epoch_permutation(n, seed, epoch)(positions)
        assert out.dtype == np.int64 and out.shape == (n,)
        assert _is_permutation(out, n), (n, seed, epoch)


@given(n=st.integers(1, 5000), seed=st.integers(0, 2**64 - 1), epoch=st.integers(0, 2**64 - 1))
@settings(max_examples=60, deadline=None)
def test_permutation_and_inverse_for_any_n(n, seed, epoch):
    perm = epoch_permutation(n, seed, epoch)
    out = perm(np.arange(n))
    assert _is_permutation(out, n)
    np.testing.assert_array_equal(perm.inverse(out), np.arange(n))


def test_sizes_around_powers_of_two_are_permutations():
    # Every width parity and both sides of each power of two up to 2**17.
    for k in range(1, 18):
        for n in (2**k - 1, 2**k, 2**k + 1):
            assert _is_permutation(epoch_permutation(n, 7, 0)(np.arange(n)), n), n


def test_scalar_and_shaped_inputs():
    perm = epoch_permutation(1000, 3, 4)
    flat = perm(np.arange(1000))
    assert perm(17) == flat[17] and isinstance(perm(17), int)
    np.testing.assert_array_equal(perm(np.arange(1000).reshape(10, 100)), flat.reshape(10, 100))
    assert perm.inverse(int(flat[17])) == 17


def test_invalid_inputs():
    perm = epoch_permutation(10, 0, 0)
    for bad in (-1, 10, [0, 10]):
        with pytest.raises(ValueError, match=r"\[0, 10\)"):
            perm(bad)
    with pytest.raises(ValueError, match="integers"):
        perm(np.array([0.5]))
    for n in (0, -3, True, 1.5):
        with pytest.raises(ValueError):
            FeistelPermutation(n, epoch_round_keys(0, 0))
    for seed in (-1, 2**64, True, "1"):
        with pytest.raises(ValueError):
            epoch_round_keys(seed, 0)


def test_orders_differ_between_epochs_and_seeds():
    n = 1000
    a = epoch_permutation(n, 42, 0)(np.arange(n))
    b = epoch_permutation(n, 42, 1)(np.arange(n))
    assert not np.array_equal(a, np.arange(n))  # it shuffles
    assert np.mean(a == b) < 0.02  # a fresh order each epoch


def test_seed_plus_epoch_pairs_do_not_collide():
    """Grain keys epoch e of seed s with s + e, so (42, 1) == (43, 0). Our keys
    hash the pair: those orders are unrelated, and every (seed, epoch) in a
    grid gets distinct round keys."""
    n = 1000
    ours_a = epoch_permutation(n, 42, 1)(np.arange(n))
    ours_b = epoch_permutation(n, 43, 0)(np.arange(n))
    assert np.mean(ours_a == ours_b) < 0.02
    keys = {epoch_round_keys(s, e).tobytes() for s in range(50) for e in range(50)}
    assert len(keys) == 2500

    grain_shuffle = pytest.importorskip(
        "grain._src.python.experimental.index_shuffle.python.index_shuffle_module"
    )

    def grain_order(seed, epoch):
        return [grain_shuffle.index_shuffle(i, max_index=n - 1, seed=seed + epoch, rounds=4)
                for i in range(n)]

    assert grain_order(42, 1) == grain_order(43, 0)  # the flaw being avoided


def test_grain_drops_a_record_where_ours_does_not():
    """N = 2**16 + 1: Grain's index_shuffle repeats one index and drops one."""
    n = 2**16 + 1
    assert _is_permutation(epoch_permutation(n, 0, 0)(np.arange(n)), n)
    grain_shuffle = pytest.importorskip(
        "grain._src.python.experimental.index_shuffle.python.index_shuffle_module"
    )
    theirs = [grain_shuffle.index_shuffle(i, max_index=n - 1, seed=0, rounds=4) for i in range(n)]
    assert len(set(theirs)) < n


def test_memory_does_not_depend_on_n():
    small, big = epoch_permutation(10, 1, 1), epoch_permutation(2**62, 1, 1)
    assert small.__slots__ == big.__slots__
    assert 0 <= big(2**62 - 1) < 2**62


# -- the epoch order: sharding of the shuffled order across hosts ----------------


@given(n=st.integers(1, 3000), count=st.integers(1, 9), drop=st.booleans(), shuffle=st.booleans(),
       epoch=st.integers(0, 5))
@settings(max_examples=60, deadline=None)
def test_hosts_split_each_epoch(n, count, drop, shuffle, epoch):
    hosts = [EpochOrder(n, seed=5, shuffle=shuffle, shard_index=i, shard_count=count,
                        drop_remainder=drop) for i in range(count)]
    parts = [h.indices(epoch, 0, h.length) for h in hosts]
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size  # disjoint, no repeats
    if drop:
        assert {h.length for h in hosts} == {n // count}
    else:
        assert joined.size == n and _is_permutation(joined, n)  # union is the epoch
        assert max(h.length for h in hosts) - min(h.length for h in hosts) <= 1
    # The hosts' slices, in host order, are the epoch's global order.
    expected = epoch_permutation(n, 5, epoch)(np.arange(n)) if shuffle else np.arange(n)
    start = 0
    for h, part in zip(hosts, parts):
        np.testing.assert_array_equal(part, expected[h.start: h.start + h.length])
        start += h.length


def test_indices_across_cache_blocks_match_the_permutation():
    n = 3 * BLOCK + 5
    order = EpochOrder(n, seed=9, shuffle=True, shard_index=0, shard_count=1, drop_remainder=False)
    full = epoch_permutation(n, 9, 2)(np.arange(n))
    for pos, count in [(0, 1), (BLOCK - 3, 7), (BLOCK, BLOCK), (2 * BLOCK - 1, BLOCK + 6), (n - 1, 1)]:
        np.testing.assert_array_equal(order.indices(2, pos, count), full[pos: pos + count])
    with pytest.raises(IndexError):
        order.indices(0, n, 1)


def test_even_split_matches_grain():
    sharding = pytest.importorskip("grain._src.core.sharding")
    for n in (0, 1, 7, 100, 101):
        for count in (1, 2, 3, 8):
            for drop in (False, True):
                for i in range(count):
                    opts = sharding.ShardOptions(i, count, drop)
                    assert even_split(n, i, count, drop) == sharding.even_split(n, opts)
