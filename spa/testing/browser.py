"""A headless Chromium driven through the DevTools protocol over a pipe (no websocket
library, no driver download): load a page, evaluate script, click like a mouse, collect
console errors, take a screenshot. Used by the HTML view's test and tools/view_screenshot.py."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time

NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find() -> str | None:
    """The Chromium executable on PATH ($SPA_CHROMIUM first), or None."""
    named = os.environ.get("SPA_CHROMIUM")
    if named:
        return shutil.which(named) or (named if os.path.exists(named) else None)
    return next((p for p in map(shutil.which, NAMES) if p), None)


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, exe: str, width: int = 1400, height: int = 900, timeout: float = 60.0):
        self.timeout, self.next_id, self.buffer, self.events = timeout, 0, b"", []
        self.profile = tempfile.mkdtemp(prefix="spa-chromium-")
        to_chrome, self._in = os.pipe()  # Chromium reads commands on its fd 3
        self._out, from_chrome = os.pipe()  # and writes replies on its fd 4

        def wire():  # in the child: the pipe ends onto fds 3 and 4, through fds that cannot clash
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [exe, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(3, 4))
        os.close(to_chrome)
        os.close(from_chrome)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # -- the protocol ------------------------------------------------------------------------
    def send(self, method, session=False, **params) -> dict:
        """Call a DevTools method and return its result; raise RuntimeError on an error reply."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._in, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self) -> dict:
        end = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("Chromium did not answer")
            chunk = os.read(self._out, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def wait_for(self, method) -> dict:
        """The next event `method` (also one that came already)."""
        for k, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(k)
        while True:
            e = self._read()
            if e.get("method") == method:
                return e
            self.events.append(e)

    # -- what a test does --------------------------------------------------------------------
    def open(self, path):
        """Load a local file and wait for its load event."""
        self.send("Page.navigate", session=True, url="file://" + os.path.abspath(path))
        self.wait_for("Page.loadEventFired")

    def eval(self, expression):
        """The value of a JavaScript expression in the page."""
        r = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def click(self, selector):
        """Scroll the element into view and click its centre with the mouse."""
        box = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                        "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                        "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def type(self, selector, text):
        """Focus an input and type `text` into it as key presses."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", session=True, text=text)

    def errors(self) -> list:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        self.send("Runtime.evaluate", session=True, expression="0")  # flush pending events
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("exception", {}).get("description")
                           or p["exceptionDetails"].get("text"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text"))
        return out

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # e.g. CI's artifacts folder
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._in, self._out):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
