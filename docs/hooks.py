"""MkDocs hooks (named in mkdocs.yml): the site's pages come from the repository's own files, not copies in docs/.

- the index page is README.md;
- one page per notebook of nbs/, in reading order, rendered from its committed outputs (mkdocs-jupyter does not
  execute them); progress bars written to stderr are dropped on the way, a repeated warning is shown once;
- figures/*.png, for markdown that shows them;
- one API page per module of cad_nb (mkdocstrings), linked to the notebook that defines it.

`make docs` builds the site into _site/; tests/test_docs.py builds it into a temporary folder and checks its links.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File
from mkdocs.structure.toc import TableOfContents, get_toc

ROOT = Path(__file__).resolve().parent.parent
NBS, FIGURES, LIB = ROOT / "nbs", ROOT / "figures", ROOT / "cad_nb"
FIRST_EXPERIMENT = 20  # notebooks 00..14 are the library, 20.. the experiments (and 99, reproduce)
PROGRESS = re.compile(r"\r|\d+%\|| \d+(\.\d+)?(it/s|s/it)\]")  # tqdm's carriage returns, bars and rates
HEADING = re.compile(r'<h([1-6])[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)  # a rendered heading: level, id, html
_staging: list[Path] = []


def notebooks() -> list[Path]:
    "The notebooks of nbs/ in reading order (their file names sort that way)."
    return sorted(NBS.glob("*.ipynb"))


def is_library(nb: Path) -> bool:
    "Whether a notebook is one of the library's (numbered below FIRST_EXPERIMENT)."
    return int(re.match(r"\d+", nb.name).group()) < FIRST_EXPERIMENT


def notebook_title(nb: Path) -> str:
    "The navigation label: the notebook's number and the first part of its `# ` heading."
    for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        heading = re.search(r"^# (.+)$", "".join(cell["source"]), re.M)
        if cell["cell_type"] == "markdown" and heading:
            return f"{nb.stem.split('_')[0]} {heading.group(1).split(':')[0].replace('`', '')}"
    return nb.stem


def exported_modules() -> dict[str, str]:
    "Module name -> the notebook (stem) that exports it (its `#| default_exp` cell)."
    found = {}
    for nb in notebooks():
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(cell["source"]), re.M)
            if cell["cell_type"] == "code" and m:
                found[m.group(1)] = nb.stem
    return found


def api_modules() -> list[str]:
    "The modules of cad_nb that get an API page (nbdev's index `_modidx` and the package `__init__` do not)."
    return sorted(p.stem for p in LIB.glob("*.py") if not p.stem.startswith("_"))


def without_progress(nb: dict) -> dict:
    """The notebook without stderr stream outputs that are progress bars, and each cell's stderr shown once per
    distinct message (a warning repeated by a loop is one line and a count, not a screenful)."""
    for cell in nb["cells"]:
        if "outputs" in cell:
            cell["outputs"] = once_each([o for o in cell["outputs"] if not is_progress(o)])
    return nb


def is_progress(output: dict) -> bool:
    "Whether an output is a progress bar written to stderr."
    return output.get("name") == "stderr" and bool(PROGRESS.search("".join(output.get("text", ""))))


def once_each(outputs: list[dict]) -> list[dict]:
    "The outputs with each stderr message kept at its first appearance; a note says how many repeats were left out."
    seen, kept, repeats = set(), [], 0
    for output in outputs:
        if output.get("name") != "stderr":
            kept.append(output)
            continue
        text = "".join(output.get("text", ""))
        if text in seen:
            repeats += 1
            continue
        seen.add(text)
        kept.append(output)
    if repeats:
        note = f"[the site shows each stderr message of this cell once: {repeats} repeats left out]\n"
        kept.append(dict(output_type="stream", name="stderr", text=[note]))
    return kept


def api_page(module: str, source: str | None) -> str:
    "Markdown of one module's API page."
    origin = f"Defined, explained and tested in the notebook [{source}](../nbs/{source}.ipynb).\n\n" if source else ""
    return f"# cad_nb.{module}\n\n{origin}::: cad_nb.{module}\n"


def on_config(config):
    "The navigation in reading order: index, library notebooks, experiment notebooks, API."
    nbs = notebooks()
    config["nav"] = [
        {"Home": "index.md"},
        {"Library notebooks": [{notebook_title(nb): f"nbs/{nb.name}"} for nb in nbs if is_library(nb)]},
        {"Experiment notebooks": [{notebook_title(nb): f"nbs/{nb.name}"} for nb in nbs if not is_library(nb)]},
        {"API": [{f"cad_nb.{m}": f"api/{m}.md"} for m in api_modules()]},
    ]
    return config


@event_priority(100)  # before mkdocs-jupyter, which turns the .ipynb files into pages
def on_files(files, config):
    "Adds README (as index.md), the cleaned notebooks, the figures and the API pages to the site's files."
    stage = Path(tempfile.mkdtemp(prefix="cad_nb_docs_"))
    _staging.append(stage)
    (stage / "nbs").mkdir()
    urls = config["use_directory_urls"]
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    for nb in notebooks():
        cleaned = without_progress(json.loads(nb.read_text(encoding="utf-8")))
        (stage / "nbs" / nb.name).write_text(json.dumps(cleaned, indent=1, ensure_ascii=False), encoding="utf-8")
        files.append(File(f"nbs/{nb.name}", str(stage), config["site_dir"], urls))
    for png in sorted(FIGURES.rglob("*.png")):
        files.append(File(png.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"], urls))
    sources = exported_modules()
    for module in api_modules():
        files.append(File.generated(config, f"api/{module}.md", content=api_page(module, sources.get(module))))
    return files


def headings_toc(html: str) -> TableOfContents:
    "A table of contents of a rendered page's headings, nested by level, pointing at their ids."
    tokens, open_tokens = [], []
    for level, heading_id, inner in HEADING.findall(html):
        name = re.sub(r"<[^>]+>", "", inner).replace("¶", "").strip()
        token = dict(level=int(level), id=heading_id, name=name, children=[])
        while open_tokens and open_tokens[-1]["level"] >= token["level"]:
            open_tokens.pop()
        (open_tokens[-1]["children"] if open_tokens else tokens).append(token)
        open_tokens.append(token)
    return get_toc(tokens)


def on_page_content(html, page, config, files):
    """A notebook page's table of contents from its rendered headings: mkdocs-jupyter's own leaves a heading's
    inline code out of its anchor (the heading's id keeps it) and reads a raw front-matter cell as a heading."""
    if page.file.src_uri.endswith(".ipynb"):
        page.toc = headings_toc(html)
    return html


def on_post_build(config):
    "Removes the staged notebooks."
    while _staging:
        shutil.rmtree(_staging.pop(), ignore_errors=True)
