"""An S3 endpoint on loopback for tests: moto's threaded server, one bucket, test credentials.

``with moto_s3() as s3:`` (or the ``s3`` fixture, which also sets the credentials and the endpoint in this
process's environment) gives ``s3.endpoint``, ``s3.bucket``, ``s3.url(prefix)`` and ``s3.env`` (the variables
a ``vta`` subprocess needs besides ``--s3-endpoint``)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
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

    def client(self, user: User | None = None):  # noqa: ANN201 - a boto3 S3 client on this endpoint
        import boto3

        key, secret = (user.key, user.secret) if user else ("testing", "testing")
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def keys(self, prefix: str = "", user: User | None = None) -> list[str]:
        pages = self.client(user).get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
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


@dataclass(frozen=True)
class User:
    key: str
    secret: str

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_s3_with_policies() -> Iterator[tuple[S3, User, User]]:
    """A moto server (a subprocess) that enforces IAM policies once set up: ``(s3, writer, no_put)``, where
    ``writer`` may do anything and ``no_put`` anything but ``s3:PutObject`` (a bucket that refuses writes)."""
    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # requests before the 7th are not checked: the set-up below; every later one is checked against IAM
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "7"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        s3 = S3(endpoint=f"http://127.0.0.1:{port}", bucket=f"vta-{uuid.uuid4().hex[:10]}")
        s3.client().create_bucket(Bucket=s3.bucket)  # 1
        iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        users = []
        for name, statements in (("writer", []), ("no-put", [{"Effect": "Deny", "Action": "s3:PutObject",
                                                               "Resource": "*"}])):
            iam.create_user(UserName=name)  # 2, 5
            iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps({  # 3, 6
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}, *statements]}))
            key = iam.create_access_key(UserName=name)["AccessKey"]  # 4, 7
            users.append(User(key["AccessKeyId"], key["SecretAccessKey"]))
        yield s3, users[0], users[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
