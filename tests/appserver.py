"""``python -m sample_app`` in a subprocess, for the tests that run the real thing.

The test starts it on a free port in a temporary working directory, waits for
CherryPy's "Bus STARTED" line on its stderr (no polling), talks HTTP to it,
then stops it with a signal.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

STARTUP_TIMEOUT = 60.0  # seconds: a loaded 2-core machine imports slowly
EXIT_TIMEOUT = 30.0

# sample_app is not installed (the wheel carries poodle_cherrypy only): it is
# imported from the checkout, whatever the subprocess's working directory.
ROOT = Path(__file__).resolve().parent.parent


def sample_app_environ(env: Optional[dict[str, str]] = None) -> dict[str, str]:
    """os.environ without ``SAMPLE_APP_*``, plus ``env``, with the checkout on PYTHONPATH."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLE_APP_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    return environ


class Server:
    """``python -m sample_app`` in a subprocess, its stderr read by a thread."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: Optional[dict[str, str]] = None,
        access_log: Optional[Path] = None,
    ) -> None:
        """``access_log``: a file to write the access log (stdout) to; else it is dropped."""
        environ = sample_app_environ(env)
        self.access_log = access_log
        command = [sys.executable, "-m", "sample_app", *args]
        options: dict[str, Any] = dict(
            cwd=cwd, env=environ, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if access_log is None:
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, **options)
        else:
            with open(access_log, "wb") as stdout:  # the child keeps its own copy
                self.proc = subprocess.Popen(command, stdout=stdout, **options)
        self.log: list[str] = []
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until a line of stderr holds ``text``; fail with the log if it ends first."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                pytest.fail(f"no {text!r} within {timeout} s; log:\n{''.join(self.log)}")
            if line is None:
                pytest.fail(f"exited ({self.proc.wait()}) before {text!r}; log:\n"
                            f"{''.join(self.log)}")
            self.log.append(line)
            if text in line:
                return

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum``; the exit status (and the rest of the log)."""
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_TIMEOUT} s after {signal.Signals(signum).name}; "
                        f"log:\n{''.join(self.log)}")
        self._reader.join(EXIT_TIMEOUT)
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.log.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(EXIT_TIMEOUT)
