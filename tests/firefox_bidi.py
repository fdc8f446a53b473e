"""Drive Debian's Firefox ESR headless over WebDriver BiDi, for the viewer's Firefox tests.

Playwright's own Firefox is a patched build that cannot be fetched here, and its BiDi mode
expects commands newer than the ESR has (emulation.setMediaFeaturesOverride). The viewer
tests need little: open a page, evaluate scripts, wait for a condition, move the mouse,
turn the wheel, press keys and take a screenshot. This module speaks exactly that much of
the W3C WebDriver BiDi protocol to the stock browser, with method names that follow
Playwright's (goto, evaluate, wait_for_function, mouse.move ...) so that helpers written
for a Playwright page work on a FirefoxPage too.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

# WebDriver's code points for the non-character keys the tests press (W3C WebDriver §17.4.2).
KEYS = {
    "Enter": "\ue007",
    "Escape": "\ue00c",
    "End": "\ue010",
    "Home": "\ue011",
    "ArrowLeft": "\ue012",
    "ArrowUp": "\ue013",
    "ArrowRight": "\ue014",
    "ArrowDown": "\ue015",
}
# A script in the form of a function (called with the argument) rather than an expression.
_FUNCTION = re.compile(r"^\s*(async\s+)?(function\b|\([^)]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)")


class BidiError(RuntimeError):
    pass


def firefox_executable() -> str | None:
    return shutil.which("firefox-esr") or shutil.which("firefox")


class Firefox:
    """One headless Firefox process and its BiDi session."""

    def __init__(self, executable: str, workdir: Path, timeout: float = 30.0) -> None:
        profile = workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HOME=str(workdir), MOZ_HEADLESS="1", MOZ_CRASHREPORTER_DISABLE="1")
        self.process = subprocess.Popen(
            [executable, "--headless", "--remote-debugging-port=0", "--profile", str(profile)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.log: list[str] = []
        endpoint = self._endpoint(timeout)
        self._closing = contextlib.ExitStack()
        self.ws: ClientConnection = self._closing.enter_context(
            connect(f"{endpoint}/session", max_size=None)
        )
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.send("session.new", {"capabilities": {}})
        self.send("session.subscribe", {"events": ["log.entryAdded"]})

    def _endpoint(self, timeout: float) -> str:
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line.rstrip())
                match = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.process.kill()
            raise BidiError("Firefox did not start its BiDi server:\n" + "\n".join(self.log[-20:]))
        return found[0]

    def send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        command_id = next(self._ids)
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("type") == "event":
                self.events.append(message)
            elif message.get("id") == command_id:
                if message.get("type") == "error":
                    raise BidiError(f"{method}: {message.get('error')}: {message.get('message')}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def new_page(self, width: int = 1280, height: int = 800) -> FirefoxPage:
        """A tab in a user context of its own (its own localStorage and cookies)."""
        user_context = self.send("browser.createUserContext", {})["userContext"]
        context = self.send("browsingContext.create", {"type": "tab", "userContext": user_context})[
            "context"
        ]
        self.send(
            "browsingContext.setViewport",
            {"context": context, "viewport": {"width": width, "height": height}},
        )
        return FirefoxPage(self, context, user_context)

    def close(self) -> None:
        try:
            self.send("browser.close", {})
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
        try:
            self._closing.close()
        finally:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


class FirefoxPage:
    default_timeout = 15.0

    def __init__(self, browser: Firefox, context: str, user_context: str) -> None:
        self.browser = browser
        self.context = context
        self.user_context = user_context
        self.mouse = _Mouse(self)
        self.keyboard = _Keyboard(self)
        self._events_seen = len(browser.events)

    # ---- navigation and scripts ----

    def goto(self, url: str) -> None:
        self.browser.send(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    def reload(self) -> None:
        self.browser.send("browsingContext.reload", {"context": self.context, "wait": "complete"})

    def evaluate(self, script: str, arg: Any = None) -> Any:
        target = {"context": self.context}
        if _FUNCTION.match(script):
            params = {
                "functionDeclaration": script,
                "arguments": [] if arg is None else [_local_value(arg)],
                "target": target,
                "awaitPromise": True,
            }
            answer = self.browser.send("script.callFunction", params)
        else:
            params = {"expression": script, "target": target, "awaitPromise": True}
            answer = self.browser.send("script.evaluate", params)
        if answer.get("type") == "exception":
            details = answer.get("exceptionDetails", {})
            raise BidiError(f"script failed: {details.get('text')}\n{script[:200]}")
        return _remote_value(answer["result"])

    def wait_for_function(self, script: str, arg: Any = None, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.default_timeout)
        while True:
            result = self.evaluate(script, arg)
            if result:
                return result
            if time.monotonic() > deadline:
                waited = timeout or self.default_timeout
                raise TimeoutError(f"still false after {waited} s: {script}")
            time.sleep(0.05)

    # ---- elements, through the page's own DOM ----

    def box(self, selector: str) -> dict[str, float]:
        box = self.evaluate(
            """(selector) => {
                const el = document.querySelector(selector);
                if (!el) return null;
                const r = el.getBoundingClientRect();
                return { x: r.x, y: r.y, width: r.width, height: r.height };
            }""",
            selector,
        )
        if box is None:
            raise BidiError(f"no element matches {selector}")
        return dict(box)

    def click(self, selector: str) -> None:
        self.wait_for_function("(s) => !!document.querySelector(s)", selector)
        box = self.box(selector)
        self.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def fill(self, selector: str, text: str) -> None:
        self.click(selector)
        self.evaluate("(s) => { document.querySelector(s).value = ''; }", selector)
        self.keyboard.type(text)

    def press(self, selector: str, key: str) -> None:
        self.click(selector)
        self.keyboard.press(key)

    def inner_text(self, selector: str) -> str:
        return str(self.evaluate("(s) => document.querySelector(s).innerText", selector))

    # ---- what happened ----

    def javascript_errors(self) -> list[str]:
        """Uncaught errors reported by this page since it opened (log.entryAdded, javascript)."""
        errors = []
        for event in self.browser.events[self._events_seen :]:
            params = event.get("params", {})
            source = params.get("source", {}).get("context")
            if (
                event.get("method") == "log.entryAdded"
                and params.get("type") == "javascript"
                and source == self.context
            ):
                errors.append(str(params.get("text")))
        return errors

    def screenshot(self, path: str) -> None:
        data = self.browser.send("browsingContext.captureScreenshot", {"context": self.context})
        Path(path).write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        self.browser.send("browsingContext.close", {"context": self.context})
        self.browser.send("browser.removeUserContext", {"userContext": self.user_context})

    def perform(self, *sources: dict[str, Any]) -> None:
        self.browser.send(
            "input.performActions", {"context": self.context, "actions": list(sources)}
        )


class _Mouse:
    def __init__(self, page: FirefoxPage) -> None:
        self.page = page
        self.x = 0.0
        self.y = 0.0

    def _pointer(self, actions: list[dict[str, Any]]) -> None:
        source = {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}}
        self.page.perform({**source, "actions": actions})

    def move(self, x: float, y: float, steps: int = 1) -> None:
        moves = []
        for step in range(1, steps + 1):
            px = self.x + (x - self.x) * step / steps
            py = self.y + (y - self.y) * step / steps
            moves.append({"type": "pointerMove", "x": math.floor(px), "y": math.floor(py)})
        self._pointer(moves)
        self.x, self.y = x, y

    def down(self) -> None:
        self._pointer([{"type": "pointerDown", "button": 0}])

    def up(self) -> None:
        self._pointer([{"type": "pointerUp", "button": 0}])

    def click(self, x: float, y: float) -> None:
        self.move(x, y)
        self._pointer([{"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}])

    def wheel(self, delta_x: float, delta_y: float) -> None:
        self.page.perform(
            {
                "type": "wheel",
                "id": "wheel",
                "actions": [
                    {
                        "type": "scroll",
                        "x": math.floor(self.x),
                        "y": math.floor(self.y),
                        "deltaX": int(delta_x),
                        "deltaY": int(delta_y),
                    }
                ],
            }
        )


class _Keyboard:
    def __init__(self, page: FirefoxPage) -> None:
        self.page = page

    def _keys(self, values: list[str]) -> None:
        actions = []
        for value in values:
            actions += [{"type": "keyDown", "value": value}, {"type": "keyUp", "value": value}]
        self.page.perform({"type": "key", "id": "keyboard", "actions": actions})

    def press(self, key: str) -> None:
        self._keys([KEYS.get(key, key)])

    def type(self, text: str) -> None:
        self._keys(list(text))


def _local_value(value: Any) -> dict[str, Any]:
    """A Python value as a BiDi LocalValue (the argument of script.callFunction)."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "value": value}
    if isinstance(value, int | float):
        return {"type": "number", "value": value}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, list | tuple):
        return {"type": "array", "value": [_local_value(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "object", "value": [[str(k), _local_value(v)] for k, v in value.items()]}
    raise TypeError(f"cannot pass {type(value).__name__} to the browser")


def _remote_value(value: dict[str, Any]) -> Any:
    """A BiDi RemoteValue as a Python value (what a page.evaluate gives back)."""
    kind = value.get("type")
    if kind in ("undefined", "null"):
        return None
    if kind == "number":
        number = value["value"]
        special = {"NaN": math.nan, "-0": -0.0, "Infinity": math.inf, "-Infinity": -math.inf}
        return special.get(number, number) if isinstance(number, str) else number
    if kind in ("string", "boolean"):
        return value["value"]
    if kind == "bigint":
        return int(value["value"])
    if kind in ("array", "set", "nodelist", "htmlcollection"):
        return [_remote_value(v) for v in value.get("value", [])]
    if kind in ("object", "map"):
        out = {}
        for key, item in value.get("value", []):
            out[key if isinstance(key, str) else str(_remote_value(key))] = _remote_value(item)
        return out
    return {"type": kind}
