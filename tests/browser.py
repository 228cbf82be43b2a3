"""Headless Chromium for the tests that open pages (the web example, the documentation site),
driven through chromedriver's W3C WebDriver HTTP API with urllib (a few calls), so the tests
need no Python browser library. `.ci/run` installs chromium and chromium-driver."""

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    """The handful of W3C WebDriver commands the test needs."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
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
            }
        }
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def get(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def find_all(self, css):
        found = self._call("POST", f"/session/{self.session}/elements", {"using": "css selector", "value": css})
        return [next(iter(e.values())) for e in found]

    def click(self, element):
        self._call("POST", f"/session/{self.session}/element/{element}/click", {})

    def text(self, element):
        return self._call("GET", f"/session/{self.session}/element/{element}/text")

    def attribute(self, element, name):
        return self._call("GET", f"/session/{self.session}/element/{element}/attribute/{name}")

    def execute(self, script, args=()):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def console(self):
        """The page's console entries since the last call (chromedriver's log endpoint)."""
        return self._call("POST", f"/session/{self.session}/se/log", {"type": "browser"})

    def screenshot(self) -> bytes:
        import base64

        return base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))

    def quit(self):
        self._call("DELETE", f"/session/{self.session}")


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the page")


@contextlib.contextmanager
def browser():
    """A headless Chromium session through chromedriver, closed afterwards."""
    port = free_port()
    driver_process = subprocess.Popen([DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), 20)
        browser = WebDriver(port)
        try:
            yield browser
        finally:
            browser.quit()
    finally:
        driver_process.terminate()
        driver_process.wait(timeout=10)
