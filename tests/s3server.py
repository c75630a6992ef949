"""An S3 endpoint on loopback for tests: moto's threaded server, one bucket, test credentials.

``with moto_s3() as s3:`` (or the ``s3`` fixture, which also sets the credentials and the endpoint in this
process's environment) gives ``s3.endpoint``, ``s3.bucket``, ``s3.url(prefix)`` and ``s3.env`` (the variables
a ``vta`` subprocess needs besides ``--s3-endpoint``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    @property
    def env(self) -> dict[str, str]:
        return dict(CREDENTIALS)

    def client(self):  # noqa: ANN201 - a boto3 S3 client on this endpoint
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@contextmanager
def moto_s3() -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 (a free port) with a fresh bucket; stopped (and its state reset) after."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3(endpoint=f"http://{host}:{port}", bucket=f"vta-{uuid.uuid4().hex[:10]}")
    try:
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        try:
            import requests

            requests.post(f"{s3.endpoint}/moto-api/reset", timeout=10)
        except Exception:  # noqa: BLE001 - best effort: the server goes away anyway
            pass
        server.stop()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """A fresh moto S3 server and bucket; credentials, region and ``AWS_ENDPOINT_URL`` set in this process."""
    with moto_s3() as server:
        for k, v in {**CREDENTIALS, "AWS_ENDPOINT_URL": server.endpoint}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield server
