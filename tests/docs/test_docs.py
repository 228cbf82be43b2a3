"""The documentation: its generated pages are what the committed results, profiles and CLI give,
byte for byte; the site builds strictly; and in headless Chromium every page in the navigation
opens, every link inside the site resolves, and no page logs a console error. `.ci/run` also
builds it strictly on its own."""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from browser import CHROMIUM, DRIVER, browser, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_pages_are_current():
    """README table, CLI, target profiles and benchmark pages, and the navigation: regenerated
    from the committed files they come from, they are byte-identical to the committed ones."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_benchmark_result_has_a_page_and_every_page_a_result():
    results = {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    pages = {p.stem for p in (ROOT / "docs" / "reference" / "benchmarks").glob("*.md")} - {"index"}
    assert results == pages


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150 and len(text.encode()) <= 12_000
    assert "pip install -e '.[test" in text and "edgerec build --target arm64" in text


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value and tag in ("a", "link", "script", "img"):
                self.links.append(value)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"root": out, "url": f"http://127.0.0.1:{server.server_address[1]}/"}
    server.shutdown()


def pages_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("index.html") if "assets" not in p.parts)


def test_every_link_inside_the_site_resolves(site):
    broken, checked = [], set()
    for page in pages_of(site["root"]):
        parser = Links()
        parser.feed((site["root"] / page).read_text())
        base = site["url"] + page
        for link in parser.links:
            url = urllib.parse.urljoin(base, link.split("#")[0])
            if not url.startswith(site["url"]) or not link.split("#")[0] or url in checked:
                continue
            checked.add(url)
            try:
                urllib.request.urlopen(url, timeout=10).close()
            except urllib.error.HTTPError as exc:
                broken.append(f"{page}: {link} ({exc.code})")
    assert not broken, broken


def test_every_page_says_which_release_it_describes(site):
    from edgerec import __version__

    missing = [
        p for p in pages_of(site["root"]) if f"Describes edgerec {__version__}" not in (site["root"] / p).read_text()
    ]
    assert not missing, missing


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromedriver (.ci/run installs them)")
def test_the_navigation_opens_every_page_without_a_console_error(site, tmp_path):
    """Follows the site's own navigation from the home page, as a reader would; also saves a
    screenshot of each page (SCREENSHOTS=DIR keeps them) and checks the search box answers."""
    keep = Path(os.environ["SCREENSHOTS"]) if os.environ.get("SCREENSHOTS") else tmp_path
    keep.mkdir(parents=True, exist_ok=True)
    errors, seen = [], []
    with browser() as page:
        page.get(site["url"])
        wait_for(lambda: page.find_all("nav.md-nav--primary"))
        links = page.execute(
            "return [...document.querySelectorAll('nav.md-nav--primary a.md-nav__link[href]')].map(a => a.href)"
        )
        targets = list(dict.fromkeys(u.split("#")[0] for u in links if u.startswith(site["url"])))
        assert len(targets) >= 20, targets
        page.console()  # drop the home page's entries before the tour
        for url in [site["url"], *targets]:
            page.get(url)
            wait_for(lambda: page.execute("return document.readyState") == "complete")
            title = page.execute("return document.querySelector('article h1')?.textContent || ''")
            if not title.strip():
                errors.append(f"{url}: no page title (a broken page?)")
            errors += [f"{url}: {e['message']}" for e in page.console() if e.get("level") == "SEVERE"]
            name = urllib.parse.urlparse(url).path.strip("/").replace("/", "_") or "home"
            (keep / f"{name}.png").write_bytes(page.screenshot())
            seen.append(url)
        page.get(site["url"] + "?q=quantize")
        wait_for(lambda: page.find_all(".md-search-result__item"), 30)
    assert not errors, errors
    assert len(seen) == len(targets) + 1
