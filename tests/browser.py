"""Browser-test harness: the real app in a child process, driven by Playwright through Debian's chromium.

Never `playwright install`: it downloads a browser. CI installs chromium with apt (scripts/setup.sh --dev);
there a missing browser fails the tests instead of skipping them, so a broken install cannot pass quietly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """`python app.py` on a free port with its own runs folder; restartable to test re-attaching."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.port = free_port()
        self.proc = None
        self.log = runs_dir.parent / "app.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90) -> float:
        """Start the app; returns seconds until it served its page."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        started = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(self.port), "--runs-dir",
                                          str(self.runs_dir)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         env=env)
        while time.time() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return time.time() - started
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"app did not serve within {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def launch_browser(playwright):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/setup.sh --dev installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # Playwright gives each launch a fresh temporary profile (the fresh user-data-dir the browser needs).
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
