"""The web example: the ONNX bundle runs in headless Chromium with onnxruntime-web (from npm);
the test ticks items on the page, clicks Recommend and reads the list the page shows.

Chromium is driven as tests/browser.py does it. `.ci/run` installs chromium, chromium-driver and
the example's npm package.
"""

import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from browser import CHROMIUM, DRIVER, browser, wait_for

from edgerec.core.models import Shape
from edgerec.core.signing import generate_key, sign_bundle
from edgerec.core.training import TrainConfig
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.recommend import Recommender
from edgerec.stages.teacher import TeacherConfig, train_teacher

WEB = Path(__file__).resolve().parents[2] / "examples" / "web"
ORT = WEB / "node_modules" / "onnxruntime-web" / "dist"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER and ORT.is_dir()),
        reason="needs chromium, chromedriver and `npm install` in examples/web (.ci/run sets them up)",
    ),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("web")
    train_teacher(
        data_dir,
        root / "model",
        TeacherConfig(
            shape=Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12),
            train=TrainConfig(epochs=3, batch_size=16, lr=1e-2),
        ),
    )
    export(root / "model", data_dir, root / "bundle", ExportConfig(target="arm64"))
    site = root / "site"
    site.mkdir()
    for name in ("index.html", "app.js", "key.js"):
        shutil.copy(WEB / name, site / name)
    shutil.copytree(ORT, site / "ort", ignore=shutil.ignore_patterns("*.map", "*.d.ts"))
    shutil.copytree(root / "bundle", site / "bundle")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tampered = site / "tampered"  # the same page over a bundle with one byte of the model flipped
    tampered.mkdir()
    for name in ("index.html", "app.js", "key.js"):
        shutil.copy(WEB / name, tampered / name)
    (tampered / "ort").symlink_to(site / "ort")
    shutil.copytree(root / "bundle", tampered / "bundle")
    blob = bytearray((tampered / "bundle" / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (tampered / "bundle" / "model.onnx").write_bytes(bytes(blob))
    _signed_pages(root, site)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {
        "url": f"{base}/index.html",
        "tampered": f"{base}/tampered/index.html",
        "bundle": root / "bundle",
        **{name: f"{base}/{name}/index.html" for name in ("signed", "signed2", "forged", "foreign", "unsigned")},
    }
    server.shutdown()


def _signed_pages(root: Path, site: Path) -> None:
    """Pages whose key.js trusts the publisher's key, each over another bundle: signed (version 1),
    signed2 (version 2), forged (the model replaced and its hashes rewritten), foreign (signed by
    someone else), unsigned."""
    keys = root / "keys"
    keys.mkdir()
    public, other = generate_key(keys / "publisher"), generate_key(keys / "other")
    key_js = f"window.EDGEREC_PUBLIC_KEY = {json.dumps(public.read_text())};\n"
    for name in ("signed", "signed2", "forged", "foreign", "unsigned"):
        page = site / name
        page.mkdir()
        for file in ("index.html", "app.js"):
            shutil.copy(WEB / file, page / file)
        (page / "key.js").write_text(key_js)
        (page / "ort").symlink_to(site / "ort")
        shutil.copytree(root / "bundle", page / "bundle")
    sign_bundle(site / "signed" / "bundle", keys / "publisher")
    sign_bundle(site / "signed2" / "bundle", keys / "publisher", parent=site / "signed" / "bundle")
    sign_bundle(site / "foreign" / "bundle", keys / "other")
    forged = site / "forged" / "bundle"
    sign_bundle(forged, keys / "publisher")
    blob = bytearray((forged / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (forged / "model.onnx").write_bytes(bytes(blob))
    meta = json.loads((forged / "metadata.json").read_text())
    meta["integrity"]["model.onnx"]["sha256"] = hashlib.sha256(bytes(blob)).hexdigest()
    (forged / "metadata.json").write_text(json.dumps(meta))
    del other


def test_the_page_recommends_what_the_bundle_recommends(site):
    with browser() as page:
        page.get(site["url"])
        status = page.find_all("#status")[0]
        wait_for(lambda: page.text(status) in ("ready",) or page.text(status).startswith("error"))
        assert page.text(status) == "ready", page.text(status)
        boxes = page.find_all("#catalogue input")
        picked = [boxes[i] for i in (4, 0, 9)]  # ticked in this order = the history, oldest first
        for box in picked:
            page.click(box)
        page.click(page.find_all("#recommend")[0])
        wait_for(lambda: page.find_all("#results li"))
        shown = [page.attribute(li, "data-item") for li in page.find_all("#results li")]
        items = json.loads((site["bundle"] / "items.json").read_text())
        history = [items[int(page.attribute(box, "data-index")) - 1]["id"] for box in picked]
        expected = [row["item"] for row in Recommender(site["bundle"]).recommend(history)]
        assert shown == expected
        assert "top 10 of" in page.text(status)


def test_the_page_refuses_a_damaged_model(site):
    with browser() as page:
        page.get(site["tampered"])
        status = page.find_all("#status")[0]
        wait_for(lambda: page.text(status) == "ready" or page.text(status).startswith("error"))
        assert page.text(status) == "error: Error: model.onnx is not the file the bundle was built with"


def _status_after_load(page, url):
    page.get(url)
    status = page.find_all("#status")[0]
    wait_for(lambda: page.text(status).startswith(("ready", "error")))
    return page.text(status)


def test_a_page_that_trusts_a_key_loads_only_bundles_signed_with_it(site):
    with browser() as page:
        assert _status_after_load(page, site["signed"]) == "ready (signed bundle, version 1)"
        assert _status_after_load(page, site["forged"]) == (
            "error: Error: metadata.json is not the file the publisher signed"  # the hashes were rewritten
        )
        assert _status_after_load(page, site["foreign"]) == "error: Error: bundle.sig is not signed with this app's key"
        assert _status_after_load(page, site["unsigned"]).startswith("error: Error: the bundle is not signed")
        assert _status_after_load(page, site["signed2"]) == "ready (signed bundle, version 2)"
        assert _status_after_load(page, site["signed"]) == (
            "error: Error: bundle version 1 is older than 2 (downgrade refused)"
        )
