"""How to reach object storage: endpoint, region, and the NAMES of the variables that hold the keys.

Secrets are never configuration: the settings name environment variables (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` by default) and the values are read from the environment when a client is made,
so they never reach a run config, a log line, the summary or a Parquet file. ``__repr__`` shows names only.

Plain-HTTP endpoints are refused unless ``allow_http`` is set, except on the loopback interface (a local
test server or a port-forward), where TLS would protect nothing.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from urllib.parse import urlparse

DEFAULT_KEY_ID_ENV = "AWS_ACCESS_KEY_ID"
DEFAULT_SECRET_ENV = "AWS_SECRET_ACCESS_KEY"
DEFAULT_SESSION_TOKEN_ENV = "AWS_SESSION_TOKEN"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None  # None: $AWS_ENDPOINT_URL, else AWS itself
    region: str | None = None  # None: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1
    allow_http: bool = False
    key_id_env: str = DEFAULT_KEY_ID_ENV
    secret_env: str = DEFAULT_SECRET_ENV
    session_token_env: str = DEFAULT_SESSION_TOKEN_ENV

    @property
    def endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None

    @property
    def region_name(self) -> str:
        return (
            self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )

    @property
    def http_allowed(self) -> bool:
        endpoint = self.endpoint
        if not endpoint or not endpoint.startswith("http://"):
            return True
        return self.allow_http or urlparse(endpoint).hostname in _LOOPBACK

    def problems(self) -> list[str]:
        """What keeps a client from being made, one line each, naming what to set (never a value)."""
        out: list[str] = []
        endpoint = self.endpoint
        if endpoint and not endpoint.startswith(("http://", "https://")):
            out.append(f"--s3-endpoint-url {endpoint}: give an http:// or https:// URL")
        elif not self.http_allowed:
            out.append(
                f"--s3-endpoint-url {endpoint}: plain HTTP to a host other than 127.0.0.1; use https:// or "
                "pass --s3-allow-http"
            )
        missing = [name for name in (self.key_id_env, self.secret_env) if not os.environ.get(name)]
        if missing:
            out.append(
                f"object storage credentials: set {' and '.join(missing)} (or name other variables with "
                "--s3-key-id-env / --s3-secret-env)"
            )
        return out

    def _credentials(self) -> tuple[str, str, str | None]:
        return (
            os.environ.get(self.key_id_env, ""),
            os.environ.get(self.secret_env, ""),
            os.environ.get(self.session_token_env) or None,
        )

    def obstore_config(self) -> dict[str, str]:
        key_id, secret, token = self._credentials()
        config = {
            "aws_access_key_id": key_id,
            "aws_secret_access_key": secret,
            "aws_region": self.region_name,
        }
        if token:
            config["aws_session_token"] = token
        if self.endpoint:
            config["aws_endpoint"] = self.endpoint
        return config

    def client_options(self) -> dict[str, object]:
        return {"allow_http": True} if (self.endpoint or "").startswith("http://") else {}

    def polars_storage_options(self) -> dict[str, str]:
        """``storage_options`` for ``pl.scan_parquet`` / ``write_parquet`` on ``s3://`` paths."""
        options = {k: v for k, v in self.obstore_config().items() if k != "aws_endpoint"}
        if self.endpoint:
            options["aws_endpoint_url"] = self.endpoint
        if (self.endpoint or "").startswith("http://"):
            options["aws_allow_http"] = "true"
        return options

    def fsspec_filesystem(self):  # -> s3fs.S3FileSystem (imported late: s3fs pulls in aiobotocore)
        import s3fs

        key_id, secret, token = self._credentials()
        return s3fs.S3FileSystem(
            key=key_id,
            secret=secret,
            token=token,
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": self.region_name},
            # Listings must be fresh: a dump published a moment ago has to show up in the next query.
            use_listings_cache=False,
        )


def add_s3_options(group: argparse._ActionsContainer) -> None:
    """The ``--s3-*`` options of every command that reaches object storage (:func:`s3_from_args`)."""
    group.add_argument(
        "--s3-endpoint-url",
        help="an S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default $AWS_ENDPOINT_URL, else AWS)",
    )
    group.add_argument("--s3-region", help="the bucket's region (default $AWS_REGION, else us-east-1)")
    group.add_argument(
        "--s3-allow-http",
        action="store_true",
        help="allow a plain-HTTP endpoint on a host other than 127.0.0.1",
    )
    group.add_argument(
        "--s3-key-id-env",
        default=DEFAULT_KEY_ID_ENV,
        help="NAME of the environment variable holding the access key id",
    )
    group.add_argument(
        "--s3-secret-env",
        default=DEFAULT_SECRET_ENV,
        help="NAME of the environment variable holding the secret access key",
    )


def s3_from_args(args: argparse.Namespace) -> S3Settings:
    return S3Settings(
        endpoint_url=args.s3_endpoint_url,
        region=args.s3_region,
        allow_http=args.s3_allow_http,
        key_id_env=args.s3_key_id_env,
        secret_env=args.s3_secret_env,
    )
