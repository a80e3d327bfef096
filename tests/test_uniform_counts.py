"""The one test by which a chunk index keeps its record counts as one number."""

import numpy as np
import pytest

from arrayfs.layout import uniform_counts


@pytest.mark.parametrize("as_array", [False, True])
def test_uniform_counts(as_array):
    def u(counts, *args, **kw):
        return uniform_counts(np.array(counts, dtype=np.uint64) if as_array else counts, *args, **kw)

    assert u([]) and u([4]) and u([4, 4, 4]) and u([4, 4, 1])
    assert not u([4, 5]) and not u([4, 3, 4]) and not u([4, 4, 0]) and not u([0, 0])
    # A run that does not end the file must end with a full chunk.
    assert u([4, 4], 4, final=False) and not u([4, 2], 4, final=False) and u([2], 4, final=True)
    assert not u([3, 3], 4)
