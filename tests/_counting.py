"""A data source of ``n`` records that holds none: record ``i`` is ``i`` as 8
little-endian bytes (tests and benchmarks of 10**9-record datasets)."""


class CountingSource:
    """A data source of ``n`` records where record ``i`` is ``i`` as 8
    little-endian bytes: lets a test iterate N = 10**9 without the data."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return int(i).to_bytes(8, "little")

    def __getitems__(self, indices):
        return [int(i).to_bytes(8, "little") for i in indices]

    def __repr__(self):
        return f"CountingSource({self.n})"
