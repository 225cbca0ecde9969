"""A real Alertmanager (Debian's prometheus-alertmanager) on a free loopback port, for one test.

Its own config, storage directory and port; clustering off. Its one receiver is a webhook to a
local ``Receiver``; ``group_wait`` and ``group_interval`` are 1s, so a notification arrives
about a second after the alerts that make it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from typing import TYPE_CHECKING, Any, Self

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from receivers import Receiver

BINARY = "prometheus-alertmanager"
CONFIG = """\
route:
  receiver: sink
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Alertmanager:
    """``with Alertmanager(tmp_path, sink_url) as am``: ``am.url`` is its base URL."""

    def __init__(self, tmp_path: Path, sink_url: str) -> None:
        binary = shutil.which(BINARY) or shutil.which("alertmanager")
        if binary is None:
            pytest.skip("no Alertmanager (Debian's prometheus-alertmanager package); .ci/run installs it")
        self.binary = binary
        self.dir = tmp_path / "alertmanager"
        self.dir.mkdir()
        (self.dir / "alertmanager.yml").write_text(CONFIG.format(url=sink_url))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(  # noqa: S603  (our own arguments)
            [self.binary, f"--config.file={self.dir / 'alertmanager.yml'}",
             f"--storage.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--cluster.listen-address=", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(self.dir / "stderr.log").open("wb"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(self.dir / 'stderr.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("alertmanager not ready after 20s")

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)


def wait_for(receiver: Receiver, path: str, predicate: Any, timeout: float = 15) -> list[dict[str, Any]]:
    """The JSON bodies ``receiver`` accepted on ``path``, once ``predicate(bodies)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = [r.json for r in receiver.accepted(path)]
        if predicate(bodies) or time.monotonic() > deadline:
            return bodies
        time.sleep(0.1)
