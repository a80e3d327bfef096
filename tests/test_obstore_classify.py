"""How the obstore transport classifies obstore's own exceptions: a 416 is
a read beyond the object's end, a 503 is retried whatever numbers the rest
of the message holds (the request's duration, the URL)."""

import pytest

from arrayfs.storage.obstore_backend import ObstoreTransport
from arrayfs.storage.transport import BEYOND, RETRY

exceptions = pytest.importorskip("obstore.exceptions")


def _message(status: str, took: str = "4.955893ms") -> str:
    return (f"Generic S3 error: Error performing GET http://127.0.0.1:38027/b-416/o in {took} - "
            f"Server returned non-2xx status code: {status}: <Error><Code>x</Code></Error>")


@pytest.mark.parametrize("took", ["4.16ms", "41.6ms", "2.004167ms"])
def test_a_503_is_retried_even_when_416_appears_elsewhere(took):
    e = exceptions.GenericError(_message("503 Service Unavailable", took))
    assert ObstoreTransport.classify(None, e, pinned=True) == RETRY


def test_a_416_is_beyond_the_end():
    e = exceptions.GenericError(_message("416 Range Not Satisfiable"))
    assert ObstoreTransport.classify(None, e, pinned=True) == BEYOND
