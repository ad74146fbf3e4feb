"""A real S3 endpoint for the tests: moto's server (the S3 HTTP API, in a subprocess on 127.0.0.1),
read through pyarrow's own S3 client, as a cluster would read a bucket. Credentials go in the
environment (dummy ones), the endpoint in each URI's query, as `gdino.sources` expects.

    store = ObjectStore.start()
    store.put_tree(local_folder, "bucket/photos")
    uri = store.uri("bucket/photos")       # s3://bucket/photos?endpoint_override=127.0.0.1:PORT&scheme=http&...
    store.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ObjectStore:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port

    @classmethod
    def start(cls) -> ObjectStore:
        server = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        if server is None:
            raise RuntimeError('moto_server is not installed (pip install "moto[server]")')
        port = _free_port()
        proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        return cls(proc, port)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def query(self) -> str:
        return f"endpoint_override=127.0.0.1:{self.port}&region=us-east-1&scheme=http"  # canonical: sorted

    def uri(self, path: str) -> str:
        return f"s3://{path}?{self.query()}"

    def filesystem(self):
        from pyarrow import fs

        return fs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", region="us-east-1",
                               access_key="testing", secret_key="testing", allow_bucket_creation=True)

    def put(self, key: str, data: bytes) -> None:
        filesystem = self.filesystem()
        filesystem.create_dir(key.split("/")[0])
        with filesystem.open_output_stream(key) as out:
            out.write(data)

    def put_tree(self, folder: Path, prefix: str) -> list[str]:
        """Every file under `folder` to `prefix` (bucket/...), hidden ones too; returns the keys."""
        keys = []
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                key = f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}"
                self.put(key, path.read_bytes())
                keys.append(key)
        return keys
