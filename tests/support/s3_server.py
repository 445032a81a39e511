"""A real S3-compatible server on 127.0.0.1 for the object storage tests: moto in server mode.

Credentials are enforced like S3's: the fixture turns moto's authentication on, makes an IAM user with
S3 rights and an access key for it, so a wrong secret is refused with the error S3 gives. The key pair is
handed to the code under test through environment variables, as a user would.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

_S3_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
# IAM calls the fixture makes before authentication applies: user, policy, access key.
_SETUP_ACTIONS = 3


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key_id: str
    secret: str

    def client(self):  # -> a boto3 S3 client with the server's valid key
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def new_bucket(self, stem: str = "backfill") -> str:
        name = f"{stem}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    import boto3
    from moto.server import ThreadedMotoServer

    # The server logs every request; the tests' failure output should show the pipeline's messages.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        # The server runs in this process: authentication is switched on where moto reads it.
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        settings.INITIAL_NO_AUTH_ACTION_COUNT = _SETUP_ACTIONS
        ActionAuthenticatorMixin.request_count = 0
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name="us-east-1",
        )
        iam.create_user(UserName="backfill")
        iam.put_user_policy(UserName="backfill", PolicyName="s3", PolicyDocument=json.dumps(_S3_ALL))
        key = iam.create_access_key(UserName="backfill")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()
        # Later tests in this process start with moto's default (no authentication).
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server's valid key pair and endpoint in the environment, as a user would set them."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
