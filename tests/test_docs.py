"""The documentation site (`make docs`): it builds from the committed notebooks, has a page for every notebook and
every module, and every link or image inside it that points within the site resolves to a file (and anchor)."""

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("mkdocs_jupyter", reason="the docs extra (pip install -e '.[docs]') builds the site")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import hooks  # noqa: E402  (docs/hooks.py: which notebooks and modules the site has)


class Links(HTMLParser):
    "The href/src targets and the element ids of one HTML page."

    def __init__(self):
        super().__init__()
        self.targets, self.ids, self.images = [], set(), 0
        self.outputs, self._depth = [], 0  # the text of the notebook's outputs (nbconvert's output areas)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "name" in attrs:
            self.ids.add(attrs["name"])
        self.images += tag == "img"
        if tag == "div" and (self._depth or "jp-OutputArea-output" in (attrs.get("class") or "")):
            self._depth += 1
        for key in ("href", "src"):
            if attrs.get(key):
                self.targets.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "div" and self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.outputs.append(data)


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def build(out: Path) -> Path:
    "The site, built into `out` as `make docs` builds it (strict: a broken markdown link or a docstring warning fails)."
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT))
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def internal(target: str) -> bool:
    "Whether a link points within the site (not another site, an e-mail address or inline data)."
    parts = urlsplit(target)
    return not (parts.scheme or parts.netloc or target.startswith(("mailto:", "data:", "javascript:")))


def resolve(site: Path, page: Path, target: str) -> tuple[Path, str]:
    "The file and the fragment an internal link of `page` points to."
    parts = urlsplit(target)
    base = site if parts.path.startswith("/") else page.parent
    path = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else page
    return (path / "index.html" if path.is_dir() else path), unquote(parts.fragment)


def check_every_notebook_and_module_has_a_page(site):
    assert (site / "index.html").is_file()
    for nb in hooks.notebooks():
        assert (site / "nbs" / f"{nb.stem}.html").is_file(), nb.name
    for module in hooks.api_modules():
        page = (site / "api" / f"{module}.html").read_text(encoding="utf-8")
        assert f"cad_nb.{module}" in page, module


def check_navigation_in_reading_order(site):
    nav = parse(site / "index.html").targets
    pages = [t for t in nav if t.startswith("nbs/")]
    order = list(dict.fromkeys(pages))
    expected = [f"nbs/{nb.stem}.html" for nb in hooks.notebooks() if hooks.is_library(nb)]
    expected += [f"nbs/{nb.stem}.html" for nb in hooks.notebooks() if not hooks.is_library(nb)]
    assert order == expected


def check_internal_links_resolve(site):
    pages = sorted(site.rglob("*.html"))
    parsed = {p.resolve(): parse(p) for p in pages}
    broken = []
    for page, links in parsed.items():
        for target in filter(internal, links.targets):
            path, fragment = resolve(site, page, target)
            if not path.is_file():
                broken.append(f"{page.relative_to(site)}: {target} (no file)")
            elif fragment and path.suffix == ".html" and fragment not in parsed[path].ids:
                broken.append(f"{page.relative_to(site)}: {target} (no anchor)")
    assert not broken, "\n".join(broken[:40])


def check_pages_show_figures_without_noise(site):
    assert parse(site / "nbs" / "06_cfrg.html").images >= 1  # the figure of CFRG's maps
    committed_images = sum(
        "image/png" in o.get("data", {})
        for c in json.loads((ROOT / "nbs" / "20_cfrg_tables.ipynb").read_text(encoding="utf-8"))["cells"]
        for o in c.get("outputs", [])
    )
    assert parse(site / "nbs" / "20_cfrg_tables.html").images >= committed_images
    for page in (site / "nbs").glob("*.html"):
        text, outputs = page.read_text(encoding="utf-8"), "".join(parse(page).outputs)
        assert "\x1b[" not in text, f"{page.name}: raw ANSI escape codes"
        assert not hooks.PROGRESS.search(outputs), f"{page.name}: a progress bar"
        assert str(ROOT) not in text and "cad_nb_docs_" not in text, f"{page.name}: a machine path"


def test_site(tmp_path):
    "One build (about 40 s on 2 cores), every check on it; one test, so that pytest -n 2 builds it once."
    site = build(tmp_path / "site")
    check_every_notebook_and_module_has_a_page(site)
    check_navigation_in_reading_order(site)
    check_internal_links_resolve(site)
    check_pages_show_figures_without_noise(site)


def test_progress_bars_are_dropped():
    bar = "RD 1/30:  35%|███▌      | 7/20 [00:01<00:02, 5.1it/s]\r"
    outputs = [
        dict(output_type="stream", name="stderr", text=[bar]),
        dict(output_type="stream", name="stderr", text=["UserWarning: a warning stays\n"]),
        dict(output_type="stream", name="stdout", text=["a result stays\n"]),
    ]
    nb = hooks.without_progress(dict(cells=[dict(cell_type="code", source=[], outputs=outputs)]))
    assert [o["text"][0] for o in nb["cells"][0]["outputs"]] == ["UserWarning: a warning stays\n", "a result stays\n"]


def test_repeated_warnings_are_shown_once():
    warning = dict(output_type="stream", name="stderr", text=["Unexpected keys found while loading\n"])
    result = dict(output_type="stream", name="stdout", text=["done\n"])
    nb = hooks.without_progress(
        dict(cells=[dict(cell_type="code", source=[], outputs=[warning, warning, result, warning])])
    )
    texts = [o["text"][0] for o in nb["cells"][0]["outputs"]]
    assert texts[:2] == ["Unexpected keys found while loading\n", "done\n"] and "2 repeats" in texts[2]
