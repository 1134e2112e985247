"""Headless Chromium over the DevTools protocol, with the network closed, for the page checks.

    with Chromium(binary) as browser:
        visit = browser.visit(f"{site}/notebooks/01_x.html", width=390)
        visit.console_errors, visit.requests, visit.evaluate("document.title")

One browser process serves every page of a test session; each :meth:`Chromium.visit` opens a
fresh tab with the given viewport (``width <= 600`` emulates a phone: mobile viewport, touch),
loads the page, waits until the network is idle and every plotly figure is drawn, and records
what a reader's browser would report: console errors, uncaught exceptions and promise
rejections, failed or 4xx/5xx requests, and every response (for the page weight).

The network is closed to everything but loopback twice over: host names resolve to nothing
(``--host-resolver-rules``) and every non-loopback connection goes to a proxy on a closed
loopback port. :func:`network_is_closed` checks that this holds.
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

import websocket

# Headless, no sandbox (CI runs as root), no background connections, no network but loopback.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-first-run",
    "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",  # discard port, closed: any proxied request fails
    "--remote-debugging-port=0", "--remote-allow-origins=*",
]  # fmt: skip
PHONE_MAX_WIDTH = 600
START_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 60
# After the load event: the network counts as idle after this long without a pending request.
IDLE_S = 0.5

# Runs in every page before its own scripts: records when each plotly figure is first drawn
# (milliseconds since navigation start) in window.__bookPlots.
_DRAW_TIMER = """
(() => {
  const drawn = window.__bookPlots = {count: 0, drawn: 0, times: []};
  const poll = () => {
    const divs = document.querySelectorAll('.plotly-graph-div');
    drawn.count = divs.length;
    for (const div of divs) {
      if (!div.__bookDrawn && div.querySelector('.main-svg')) {
        div.__bookDrawn = true;
        drawn.times.push(performance.now());
      }
    }
    drawn.drawn = drawn.times.length;
  };
  setInterval(poll, 25);
})();
"""


def chromium_binary() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium")


@dataclass
class Response:
    url: str
    status: int
    mime: str
    encoded_bytes: int = 0
    failed: str = ""


@dataclass
class Visit:
    """What one page load produced; ``evaluate`` runs JavaScript in the loaded page."""

    url: str
    width: int
    session: _Session
    responses: dict[str, Response] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)
    load_ms: float = 0.0

    def evaluate(self, expression: str):
        result = self.session.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
        })  # fmt: skip
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"JavaScript error in {self.url}: "
                               f"{details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        """PNG or JPEG (quality 80, several times faster for a long page) by ``path``'s suffix."""
        jpeg = path.suffix.lower() in (".jpg", ".jpeg")
        params: dict = {"format": "jpeg" if jpeg else "png", "captureBeyondViewport": full_page}
        if jpeg:
            params["quality"] = 80
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth,"
                                 " document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 16000),
                              "scale": 1}
        data = self.session.send("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.session.close()


class _Session:
    """One tab, attached in flat mode on the browser's websocket."""

    def __init__(self, browser: Chromium, target_id: str, session_id: str):
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, session_id=self.session_id)

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target_id})


class Chromium:
    """A headless Chromium process and its DevTools websocket (a context manager)."""

    def __init__(self, binary: str, extra_flags: list[str] | None = None):
        self.profile = tempfile.mkdtemp(prefix="book-chromium-")
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, *(extra_flags or []), f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium ({binary}) did not start its DevTools endpoint.")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}",
                                              timeout=COMMAND_TIMEOUT_S, suppress_origin=True)
        self._next_id = 0
        self._sessions: dict[str, _Session] = {}

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            try:
                self.ws.close()
            except OSError:
                pass
            self.ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    # --- protocol -------------------------------------------------------------------------

    def _dispatch(self, message: dict) -> None:
        session = self._sessions.get(message.get("sessionId", ""))
        if session is not None and "method" in message:
            session.events.append(message)

    def _receive(self, timeout: float) -> dict | None:
        self.ws.settimeout(timeout)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session_id: str | None = None,
             timeout: float = COMMAND_TIMEOUT_S) -> dict:
        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._receive(max(0.01, deadline - time.monotonic()))
            if reply is None:
                continue
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            self._dispatch(reply)
        raise TimeoutError(f"DevTools {method}: no reply in {timeout} s")

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            reply = self._receive(left)
            if reply is not None:
                self._dispatch(reply)

    # --- pages ----------------------------------------------------------------------------

    def new_tab(self, width: int, height: int = 900) -> _Session:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session_id = self.send("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        session = _Session(self, target, session_id)
        self._sessions[session_id] = session
        phone = width <= PHONE_MAX_WIDTH
        for method in ("Page.enable", "Network.enable", "Runtime.enable", "Log.enable"):
            session.send(method)
        session.send("Network.setCacheDisabled", {"cacheDisabled": True})
        session.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone,
        })  # fmt: skip
        session.send("Emulation.setTouchEmulationEnabled", {"enabled": phone})
        session.send("Page.addScriptToEvaluateOnNewDocument", {"source": _DRAW_TIMER})
        return session

    def visit(self, url: str, width: int = 1280, height: int = 900,
              timeout: float = 30.0) -> Visit:
        """Load ``url`` in a new tab; return once the network is idle and all plots are drawn
        (or ``timeout`` seconds passed)."""
        session = self.new_tab(width, height)
        visit = Visit(url, width, session)
        start = time.monotonic()
        session.send("Page.navigate", {"url": url})
        loaded = False
        pending: set[str] = set()
        quiet_since = time.monotonic()
        consumed = 0
        while time.monotonic() - start < timeout:
            self.pump(0.05)
            for event in session.events[consumed:]:
                loaded |= self._record(event, visit, pending)
            consumed = len(session.events)
            if pending:
                quiet_since = time.monotonic()
            if loaded and time.monotonic() - quiet_since >= IDLE_S:
                plots = visit.evaluate("JSON.stringify(window.__bookPlots || null)")
                plots = json.loads(plots) if plots else None
                if plots is None or plots["drawn"] >= plots["count"]:
                    break
        visit.load_ms = (time.monotonic() - start) * 1000
        self.pump(0.2)  # late console messages
        for event in session.events[consumed:]:
            self._record(event, visit, pending)
        session.events.clear()
        return visit

    @staticmethod
    def _record(event: dict, visit: Visit, pending: set[str]) -> bool:
        method, params = event["method"], event.get("params", {})
        if method == "Page.loadEventFired":
            return True
        if method == "Network.requestWillBeSent":
            pending.add(params["requestId"])
        elif method == "Network.responseReceived":
            response = params["response"]
            visit.responses[params["requestId"]] = Response(
                response["url"], int(response.get("status", 0)), response.get("mimeType", ""))
        elif method == "Network.loadingFinished":
            pending.discard(params["requestId"])
            if params["requestId"] in visit.responses:
                visit.responses[params["requestId"]].encoded_bytes = int(
                    params.get("encodedDataLength", 0))
        elif method == "Network.loadingFailed":
            pending.discard(params["requestId"])
            entry = visit.responses.setdefault(params["requestId"], Response("?", 0, ""))
            entry.failed = params.get("errorText", "failed")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            visit.console_errors.append(f"uncaught: {text.splitlines()[0] if text else details}"
                                        f" ({details.get('url', '')}:{details.get('lineNumber')})")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(arg.get("value", arg.get("description", "")))
                            for arg in params.get("args", []))
            visit.console_errors.append(f"console.{params['type']}: {text[:300]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            visit.console_errors.append(f"{entry.get('source', 'log')}: {entry['text'][:300]}"
                                        f" {entry.get('url', '')}".rstrip())
        return False


def network_is_closed(browser: Chromium, url: str) -> tuple[bool, str]:
    """Try to load ``url`` (a CDN script) from a blank page; closed means the request failed."""
    page = ("data:text/html,<html><body><script>"
            f"fetch({json.dumps(url)}, {{mode: 'no-cors'}}).then(() => document.title = 'OPEN',"
            " () => document.title = 'CLOSED');</script></body></html>")
    visit = browser.visit(page, timeout=20)
    title = ""
    for _ in range(100):
        title = visit.evaluate("document.title")
        if title:
            break
        time.sleep(0.1)
    failures = [r.failed for r in visit.responses.values() if r.failed]
    visit.close()
    return title == "CLOSED", f"title {title!r}, failures {failures}"
