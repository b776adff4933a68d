"""Render an HTML file in headless Chromium: a PNG screenshot and every console problem.

Talks the DevTools protocol over ``--remote-debugging-pipe`` (fds 3 and 4, NUL-separated
JSON), so no websocket package is needed. Console calls, uncaught exceptions and failed
resource loads (``Log.entryAdded``) are all collected: the report is static and offline,
so a clean render logs nothing at all.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--remote-debugging-pipe")


class BrowserError(RuntimeError):
    """Chromium is missing, or did not render the page; the message says which."""


@dataclass
class Rendered:
    screenshot: Path
    console: list[str] = field(default_factory=list)   # "level: text" per message


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError("headless Chromium not found: install Debian's `chromium` "
                       "(scripts/system-packages.sh does it)")


def render(html: Path, screenshot: Path, width: int = 1280, height: int = 1400,
           full_page: bool = False, timeout_s: float = 60.0) -> Rendered:
    """Open ``html`` (a file), wait for its load event, screenshot it, collect console problems."""
    binary = find_chromium()
    screenshot = Path(screenshot)
    with tempfile.TemporaryDirectory(prefix="autocompress-chromium-") as profile:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()

        def wire_fds():   # the child's fd 3 reads our commands, fd 4 carries its replies
            read_end, write_end = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        session = _Pipe(to_child_w, from_child_r, time.monotonic() + timeout_s)
        try:
            return _drive(session, Path(html).resolve().as_uri(), screenshot, width, height,
                          full_page)
        finally:
            session.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _drive(pipe: "_Pipe", url: str, screenshot: Path, width: int, height: int,
           full_page: bool) -> Rendered:
    target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for method in ("Runtime.enable", "Log.enable", "Page.enable"):
        pipe.call(method, {}, sid)
    pipe.call("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, sid)
    pipe.call("Page.navigate", {"url": url}, sid)
    pipe.wait_for("Page.loadEventFired")
    pipe.settle(0.3)
    params = {"format": "png"}
    if full_page:
        params["captureBeyondViewport"] = True
        metrics = pipe.call("Page.getLayoutMetrics", {}, sid)["cssContentSize"]
        params["clip"] = {"x": 0, "y": 0, "width": width, "height": metrics["height"], "scale": 1}
    data = pipe.call("Page.captureScreenshot", params, sid)["data"]
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(data))
    try:
        pipe.call("Browser.close", {})
    except BrowserError:
        pass
    return Rendered(screenshot, pipe.console)


class _Pipe:
    """DevTools protocol over two pipes: requests by id, events gathered as they pass."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float):
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []
        self.console: list[str] = []

    def call(self, method: str, params: dict, session_id: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session_id:
            message["sessionId"] = session_id
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"Chromium refused {method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def wait_for(self, event: str) -> dict:
        while True:
            for i, seen in enumerate(self.events):
                if seen.get("method") == event:
                    return self.events.pop(i)
            self._read()

    def settle(self, seconds: float) -> None:
        """Keep reading events for a moment (late console messages)."""
        import select

        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if select.select([self.read_fd], [], [], left)[0]:
                self._read()

    def _read(self) -> dict:
        import select

        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise BrowserError("Chromium exited before the page was rendered")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._note(message)
            self.events.append(message)
        return message

    def _note(self, event: dict) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"exception: {text}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(f"{entry['level']}: {entry['text']} {entry.get('url', '')}".strip())

    def close(self) -> None:
        for fd in (self.write_fd, self.read_fd):
            try:
                os.close(fd)
            except OSError:
                pass
