"""A headless chromium behind chromedriver, driven through the W3C WebDriver HTTP API with the
standard library (no selenium package): the pages cnnzoo writes (`cnnzoo report`, `cnnzoo
explore`) are tested in a real browser.

Chromium is not optional for those tests: without it they fail and say how to install it.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["INSTALL", "Browser", "browser_session", "find_tool"]

INSTALL = "apt-get install -y chromium chromium-driver (as root; `make test` installs them when missing)"


def find_tool(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path:
            return path
    return None


class Browser:
    """A headless chromium session behind chromedriver, spoken to in WebDriver JSON over HTTP."""

    def __init__(self, chromium: str, chromedriver: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.driver = subprocess.Popen(
            [chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                self.driver.kill()
                raise RuntimeError("chromedriver did not start within 30 s")
            time.sleep(0.1)
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"{}")["value"]

    def open(self, path: Path | str) -> None:
        """Load a file (a Path) or a URL (a str, e.g. the file's URI with a #fragment)."""
        url = path.resolve().as_uri() if isinstance(path, Path) else path
        self._call("POST", f"/session/{self.session}/url", {"url": url})
        deadline = time.monotonic() + 30
        while self.js("return document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not finish loading")
            time.sleep(0.05)

    def js(self, script: str, *args):
        """Run `script` as a function body in the page (`arguments[i]` are `args`); its return value."""
        body = {"script": script, "args": list(args)}
        return self._call("POST", f"/session/{self.session}/execute/sync", body)

    def console(self) -> list[dict]:
        """The browser's log since the last call (each entry once): level, message."""
        return self._call("POST", f"/session/{self.session}/se/log", {"type": "browser"})

    def set_window(self, width: int, height: int) -> None:
        self._call("POST", f"/session/{self.session}/window/rect", {"width": width, "height": height})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=10)


def browser_session(what: str) -> Iterator[Browser]:
    """The body of a module-scoped fixture: `yield from browser_session("the HTML report")`."""
    chromium, chromedriver = find_tool("chromium", "chromium-browser"), find_tool("chromedriver")
    if chromium is None or chromedriver is None:
        missing = " and ".join(
            n for n, p in (("chromium", chromium), ("chromedriver", chromedriver)) if p is None
        )
        pytest.fail(f"{what} is checked in a real browser, but {missing} is not installed: {INSTALL}")
    b = Browser(chromium, chromedriver)
    try:
        yield b
    finally:
        b.close()
