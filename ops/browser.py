"""Debian's headless chromium driven over the DevTools protocol: the browser tests and
``ops/screenshots.py`` load pages, type, wait and take screenshots with it.

The protocol is the browser's own, so the client always matches the installed chromium:
no driver binary of a matching version (chromedriver) and no browser download
(Playwright), and no package beyond ``websockets``, which the service's uvicorn already
installs.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# every host name but the loopback address fails to resolve: "no internet"
OFFLINE_RULES = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless chromium with one page; ``events`` collects what the page reported."""

    def __init__(self, width: int = 1280, height: int = 900, offline: bool = False) -> None:
        binary = find_chromium()
        if binary is None:
            raise BrowserError("no chromium on PATH (apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="hr-chromium-"))
        argv = [
            binary,
            "--headless",
            "--no-sandbox",  # root in a container: the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
        ]
        if offline:
            argv.append(f"--host-resolver-rules={OFFLINE_RULES}")
        self.log = (self.profile / "chromium.log").open("wb")
        self.proc = subprocess.Popen([*argv, "about:blank"], stdout=self.log, stderr=self.log)
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._handler: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        self._stack = contextlib.ExitStack()
        try:
            self.ws = self._attach(deadline_s=60)
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Network.enable")
            self.send("Log.enable")
        except BaseException:
            self.close()
            raise

    def _attach(self, deadline_s: float) -> ClientConnection:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + deadline_s
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserError("chromium did not start: " + self._log_tail())
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        return self._stack.enter_context(ws)

    def _log_tail(self) -> str:
        self.log.flush()
        return (self.profile / "chromium.log").read_text(errors="replace")[-2000:]

    def route(
        self, pattern: str, handler: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        """Hold each request whose URL matches ``pattern`` (``*`` wildcards): ``handler`` gets
        the request and returns a response (``responseCode``, ``responseHeaders``, ``body``
        as for ``Fetch.fulfillRequest``) or None to let it through."""
        self._handler = handler
        self.send("Fetch.enable", patterns=[{"urlPattern": pattern}])

    def _received(self, message: dict[str, Any]) -> None:
        if message.get("method") != "Fetch.requestPaused" or self._handler is None:
            self.events.append(message)
            return
        params = message["params"]
        answer = self._handler(params["request"])
        # sent without waiting for the reply: a wait here would nest inside send()'s own
        method, extra = (
            ("Fetch.continueRequest", {})
            if answer is None
            else (
                "Fetch.fulfillRequest",
                {**answer, "body": base64.b64encode(answer["body"]).decode()},
            )
        )
        call = {"requestId": params["requestId"], **extra}
        self.ws.send(json.dumps({"id": next(self._ids), "method": method, "params": call}))

    def send(self, method: str, timeout_s: float = 60, **params: Any) -> dict[str, Any]:
        """One protocol call; events that arrive meanwhile go to ``events``."""
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._received(message)

    def pump(self, timeout_s: float = 0.05) -> None:
        """Collect the events that arrive within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._received(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def open(self, url: str, timeout_s: float = 60) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout_s, f"{url} to load")

    def evaluate(self, expression: str, timeout_s: float = 60) -> Any:
        """The JSON value of ``expression`` in the page (a promise is awaited)."""
        result = self.send(
            "Runtime.evaluate",
            timeout_s=timeout_s,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what or expression}")
            self.pump(0.05)

    def type_text(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def press(self, key: str, code: int) -> None:
        """A key press as the keyboard sends it (``press("Enter", 13)``)."""
        base = {"key": key, "code": key, "windowsVirtualKeyCode": code}
        text = {"Enter": "\r"}.get(key, "")
        self.send("Input.dispatchKeyEvent", type="keyDown", text=text, **base)
        self.send("Input.dispatchKeyEvent", type="keyUp", **base)

    def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (beyond the viewport)."""
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def requested_urls(self) -> list[str]:
        """The URLs the page asked for since it was opened, less those the browser itself
        refused to send (its Content-Security-Policy, for one)."""
        self.pump()
        blocked = {
            e["params"]["requestId"]
            for e in self.events
            if e.get("method") == "Network.loadingFailed" and e["params"].get("blockedReason")
        }
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
            and e["params"]["requestId"] not in blocked
        ]

    def errors(self) -> list[str]:
        """Uncaught exceptions, console errors and browser errors (a refused load, a
        Content-Security-Policy violation) reported since the page was opened."""
        self.pump()
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(" ".join(str(a.get("value", a)) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def close(self) -> None:
        self._stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
