"""Shared pytest fixtures."""

from __future__ import annotations

import socket

import pytest


# ------------------------------------------------------------------------------------------ moto S3 server


class MotoS3:
    """A real S3 HTTP API on 127.0.0.1 (moto's threaded server) that tests can stop and restart."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._cls = ThreadedMotoServer
        self.server = None
        self.start()

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options reaching this server with dummy credentials."""
        return {"key": "testing", "secret": "testing", "skip_instance_cache": True,
                "client_kwargs": {"endpoint_url": self.endpoint},
                "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5}}

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def start(self) -> None:
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def moto_s3():
    """A moto S3 server for the session; `moto_s3.stop()` / `.start()` simulate an outage."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = MotoS3()
    yield server
    try:
        server.stop()
    except Exception:  # noqa: BLE001 - already stopped by a test
        pass


@pytest.fixture
def s3_bucket(moto_s3, request):
    """A fresh, empty bucket on the moto server; yields its name."""
    import re

    name = "b-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs = moto_s3.fs()
    if fs.exists(name):
        fs.rm(name, recursive=True)
    fs.mkdir(name)
    return name
