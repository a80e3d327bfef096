"""What every arrayfs fuzz target shares: the pass rule, the limits, the
libFuzzer defaults and a mutator that keeps Riegeli hashes valid.

The pass rule (issue 12): every input ends in a value or in one of the
target's documented exception types. Anything else is re-raised, and
libFuzzer records it as a crash with the input that caused it:

* an exception of another type (``IndexError``, ``struct.error``, a bare
  ``ValueError`` where the API promises ``ArrayRecordError``, ...);
* ``MemoryError``: the address space is capped at :data:`MEMORY_LIMIT`
  above what the process holds once the code is imported, so any
  allocation sized from an unchecked field (over 256 MiB) fails;
* an ``AssertionError`` from a target's own consistency checks (two read
  paths disagreeing, sizes not matching the bytes served);
* an input taking over :data:`TIMEOUT_S` seconds (libFuzzer's
  ``-timeout``, added to the command line unless given).

Run a target as ``python fuzz/fuzz_<name>.py [libFuzzer flags] [corpus
dirs or files]``; with files instead of directories it runs each once
(the way to replay a crash).
"""

from __future__ import annotations

import operator
import os
import random
import resource
import struct
import sys

# One thread per numeric library: libFuzzer measures one input at a time,
# and idle thread pools only take address space under the cap.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import atheris  # noqa: E402
from atheris.version_dependent import CMP_OP_SHIFT_AMOUNT  # noqa: E402

__all__ = ["MEMORY_LIMIT", "TIMEOUT_S", "instrumented", "one_input", "main", "fix_hashes", "riegeli_mutator"]

# atheris traces each comparison in instrumented code through
# atheris._trace_cmp (looked up at every call; atheris.Fuzz() binds it to
# libFuzzer's), which leaks when an operand is a numpy value: about 2 KB a
# run, enough to reach the memory cap within minutes. Comparisons of plain
# values are traced (that is what guides the search to magic numbers);
# others are done directly. _hook_compares() installs this once fuzzing runs.
_native_trace_cmp = None
_TRACED = (int, bytes, str, float, bool, type(None), bytearray)
_CMP_OPS = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)


def _trace_cmp(a, b, op, counter, is_const):
    if type(a) in _TRACED and type(b) in _TRACED:
        return _native_trace_cmp(a, b, op, counter, is_const)
    return _CMP_OPS[op if op < 6 else op >> CMP_OP_SHIFT_AMOUNT](a, b)


def _hook_compares() -> None:
    global _native_trace_cmp
    current = atheris._trace_cmp
    if current is not _trace_cmp:
        _native_trace_cmp = current
        atheris._trace_cmp = _trace_cmp


#: Bytes a process may allocate beyond what it holds when fuzzing starts.
MEMORY_LIMIT = 256 << 20
#: Seconds one input may take.
TIMEOUT_S = 1

_BLOCK = 1 << 16
_BLOCK_HEADER = 24
_CHUNK_HEADER = 40
_U64 = struct.Struct("<Q")
_CHUNK_TYPES = frozenset(b"smprt")


def instrumented():
    """Context manager: modules of ``arrayfs`` imported inside it get
    atheris's coverage instrumentation (the only code whose coverage
    guides the search). Nothing is instrumented when a target is imported
    rather than run (the regression tests call its ``check``)."""
    if not os.path.basename(sys.argv[0]).startswith("fuzz_"):
        import contextlib

        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["arrayfs"])


def one_input(check, expected, *, keep_going: str | None = None):
    """``check`` wrapped by the pass rule: ``expected`` exceptions end the
    input quietly, every other exception propagates.

    ``keep_going`` (default: the ``FUZZ_KEEP_GOING`` environment variable),
    a directory: instead of stopping at the first finding, write each new
    kind of finding there (its input, and its traceback beside it; one per
    exception type and raising line) and go on. For long exploratory runs;
    a hang still stops the run.
    """
    keep_going = keep_going if keep_going is not None else os.environ.get("FUZZ_KEEP_GOING")
    seen: set = set()

    def test_one_input(data: bytes) -> None:
        if atheris._trace_cmp is not _trace_cmp:
            _hook_compares()
        try:
            check(data)
        except expected:
            pass
        except Exception as e:
            if not keep_going:
                raise
            _record(keep_going, seen, data, e)

    return test_one_input


def _record(directory: str, seen: set, data: bytes, e: Exception) -> None:
    import traceback
    import zlib

    tb = traceback.extract_tb(e.__traceback__)
    where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
    kind = (type(e).__name__, where)
    if kind in seen:
        return
    seen.add(kind)
    os.makedirs(directory, exist_ok=True)
    name = os.path.join(directory, f"finding-{type(e).__name__}-{where.replace(':', '-')}-"
                                   f"{zlib.crc32(data):08x}")
    with open(name, "wb") as f:
        f.write(data)
    with open(name + ".txt", "w") as f:
        f.write("".join(traceback.format_exception(e)))
    print(f"\n=== finding {kind[0]} at {kind[1]}: {name}\n{e!r}", file=sys.stderr, flush=True)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def limit_memory(extra: int = MEMORY_LIMIT) -> int:
    """Cap the address space at its current size plus ``extra`` bytes
    (``RLIMIT_AS``); returns the cap. Past it ``malloc``/``mmap`` fail,
    which Python raises as ``MemoryError``."""
    cap = _vm_size() + extra
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return cap


def _with_defaults(argv: list[str]) -> list[str]:
    argv = list(argv)
    flags = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")}
    if "-timeout" not in flags:
        argv.insert(1, f"-timeout={TIMEOUT_S}")
    # libFuzzer's own RSS watchdog stays above the cap: the cap fails the
    # allocation in Python, with a traceback, before the watchdog fires.
    if "-rss_limit_mb" not in flags:
        argv.insert(1, "-rss_limit_mb=4096")
    return argv


def main(check, expected, *, mutator=None) -> None:
    """Fuzz ``check`` under the pass rule (see the module docstring)."""
    args = atheris.Setup(_with_defaults(sys.argv), one_input(check, expected), custom_mutator=mutator)
    del args
    limit_memory()
    atheris.Fuzz()


# -- keeping hashes valid ------------------------------------------------------
#
# Every Riegeli chunk header, chunk data and block header carries a
# HighwayHash; a mutated byte almost always breaks one, and the reader then
# stops at the hash check. The mutator below re-hashes what it can find
# after half of its mutations so that the search reaches the decoders. The
# fuzz targets themselves take the bytes as they are: a crash input is a
# real file.


def _logical(pos: int, n: int):
    """Physical ``(start, stop)`` runs of ``n`` logical bytes from physical
    ``pos`` (block headers skipped), and the physical end."""
    runs = []
    while True:
        if pos % _BLOCK == 0:
            pos += _BLOCK_HEADER
        if n == 0:
            return runs, pos
        take = min(n, _BLOCK - pos % _BLOCK)
        runs.append((pos, pos + take))
        pos += take
        n -= take


def _chunk_end(begin: int, data_size: int, num_records: int) -> int:
    usable = _BLOCK - _BLOCK_HEADER
    length = _CHUNK_HEADER + data_size
    end = begin + length + (length + (begin + usable - 1) % _BLOCK) // usable * _BLOCK_HEADER
    least = begin + num_records
    least += max(-least % _BLOCK - (usable - 1), 0)
    return max(end, least)


def _fix_chunk(buf: bytearray, base: int, pos: int, hash64):
    """Re-hash the chunk at physical ``pos``; its end, or ``None`` when it
    does not fit in ``buf``."""
    limit = base + len(buf)
    hruns, after = _logical(pos, _CHUNK_HEADER)
    if after > limit:
        return None
    header = bytearray(b"".join(buf[a - base : b - base] for a, b in hruns))
    data_size = _U64.unpack_from(header, 8)[0]
    type_and_count = _U64.unpack_from(header, 24)[0]
    num_records = type_and_count >> 8
    if type_and_count & 0xFF not in _CHUNK_TYPES or data_size > len(buf):
        return None
    druns, dend = _logical(after, data_size)
    if druns and druns[-1][1] > limit:
        return None
    data = b"".join(bytes(buf[a - base : b - base]) for a, b in druns)
    _U64.pack_into(header, 16, hash64(data))
    _U64.pack_into(header, 0, hash64(bytes(header[8:])))
    i = 0
    for a, b in hruns:
        buf[a - base : b - base] = header[i : i + b - a]
        i += b - a
    return _chunk_end(pos, data_size, num_records)


def fix_hashes(buf: bytearray, *, base: int = 0, starts=None, max_chunks: int = 4096) -> bytearray:
    """Recompute, in place, the hashes of every block header in ``buf`` and
    of the chunks found by walking from each of ``starts`` (physical file
    positions; default: 64, after the signature, and the last block, where
    an ArrayRecord postscript sits). ``buf`` holds the file's bytes from
    ``base`` on. Returns ``buf``."""
    from arrayfs.riegeli.hashing import highway_hash64

    limit = base + len(buf)
    first = -(-base // _BLOCK) * _BLOCK
    for b in range(first, limit - _BLOCK_HEADER + 1, _BLOCK):
        _U64.pack_into(buf, b - base, highway_hash64(bytes(buf[b - base + 8 : b - base + _BLOCK_HEADER])))
    if starts is None:
        starts = [64]
        if limit >= 2 * _BLOCK and limit % _BLOCK == 0:
            starts.append(limit - _BLOCK)
    for pos in starts:
        for _ in range(max_chunks):
            if pos < base or pos >= limit:
                break
            end = _fix_chunk(buf, base, pos, highway_hash64)
            if end is None or end <= pos:
                break
            pos = end
    return buf


def riegeli_mutator(*, prefix: int = 0, base_of=None, keep_size: bool = True):
    """A libFuzzer custom mutator for inputs holding Riegeli bytes after a
    ``prefix`` of ``prefix`` bytes. ``base_of(data)`` gives the physical
    file position of the first byte after the prefix (default 0: a whole
    file). Half of the time the mutation goes to a window of up to 4 KiB
    (most of a small ArrayRecord file is padding); with ``keep_size`` the
    length is kept three times in four (a file's size must be a whole
    number of blocks); half of the results are re-hashed."""

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if len(data) > 4096 and rng.random() < 0.5:
            start = rng.randrange(len(data))
            length = min(rng.randint(1, 4096), len(data) - start)
            piece = atheris.Mutate(data[start : start + length], length)
            piece = piece[:length].ljust(length, b"\0")
            out = data[:start] + piece + data[start + length :]
        else:
            out = atheris.Mutate(data, max_size)
            if keep_size and len(out) != len(data) and rng.random() < 0.75:
                out = out[: len(data)].ljust(len(data), b"\0")
        if rng.random() < 0.5 and len(out) > prefix:
            body = bytearray(out[prefix:])
            base = base_of(out) if base_of is not None else 0
            starts = None if base_of is None else [base]
            try:
                fix_hashes(body, base=base, starts=starts)
            except Exception:  # the mutator never fails an input; the target judges it
                pass
            out = out[:prefix] + bytes(body)
        return out[:max_size]

    return mutate
