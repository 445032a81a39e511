"""What an operator is told when the object store refuses a run's first listing.

The texts below have the shape obstore gives for S3's answers (taken from the moto server the other
object storage tests run). The URL, request id and host id inside them are the request's own: a port
of 40457 or an id holding "403" must not decide what the error was.
"""

from __future__ import annotations

import pytest

from pipelines.objectstore.settings import S3Settings
from pipelines.objectstore.store import _explain


def _s3_error(status: str, code: str, endpoint: str, request_id: str) -> str:
    return (
        "Generic S3 error: Error performing list request: Error performing GET "
        f"{endpoint}/backfill-14d7a02c?list-type=2 in 50.2ms - Server returned non-2xx status code: "
        f'{status}: <?xml version="1.0" encoding="utf-8"?>\n<Error><Code>{code}</Code><Message>...'
        f"</Message><BucketName>backfill-14d7a02c</BucketName><RequestId>{request_id}</RequestId>"
        '</Error>\n\nDebug source:\nGeneric {\n    store: "S3",\n    inner: Status {\n'
        f"        status: {status.split()[0]},\n    }}\n}}"
    )


SETTINGS = S3Settings(endpoint_url="http://127.0.0.1:40457")
MISSING = "the bucket does not exist at http://127.0.0.1:40457: create it, or fix the bucket name"


@pytest.mark.parametrize("code", ["SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"])
def test_refused_keys_are_named_whatever_digits_the_port_and_ids_hold(code):
    error = _s3_error("403 Forbidden", code, "http://127.0.0.1:40457", "q404Xx4049")
    explained = _explain(error, SETTINGS)
    assert explained.startswith("http://127.0.0.1:40457 refused the credentials: check AWS_ACCESS_KEY_ID")
    assert "AWS_SECRET_ACCESS_KEY" in explained


def test_a_missing_bucket_is_named_whatever_digits_the_port_and_ids_hold():
    settings = S3Settings(endpoint_url="http://127.0.0.1:40357")
    error = _s3_error("404 Not Found", "NoSuchBucket", "http://127.0.0.1:40357", "a403AccessDenied")
    assert _explain(error, settings) == MISSING.replace("40457", "40357")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("Client error with status 404 Not Found: No Body", MISSING),
        ("Client error with status 403 Forbidden: No Body", "refused the credentials"),
    ],
)
def test_an_answer_without_a_body_is_read_from_its_status(error, expected):
    assert expected in _explain(error, SETTINGS)


def test_an_endpoint_that_does_not_answer_is_named():
    error = (
        "Generic S3 error: Error performing list request: error sending request for url "
        "(http://127.0.0.1:40457/backfill?list-type=2): client error (Connect): tcp connect error: "
        "Connection refused (os error 111)"
    )
    assert _explain(error, SETTINGS) == (
        "cannot reach the endpoint http://127.0.0.1:40457: check --s3-endpoint-url (or AWS_ENDPOINT_URL)"
    )


def test_another_error_is_passed_on_by_its_first_line():
    error = _s3_error("500 Internal Server Error", "InternalError", "http://127.0.0.1:40457", "r1")
    assert _explain(error, SETTINGS).startswith(
        "object storage error at http://127.0.0.1:40457: Generic S3 error: Error performing list request"
    )
