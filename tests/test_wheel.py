"""The wheel, installed, run from an unrelated folder: without the `reproduce` extra `cad-nb reproduce` stops in one
line (exit code 2) and the rest of `cad-nb` works; with it, `cad-nb reproduce --profile smoke` runs 03 and 04, the
notebooks that import fastcore and OpenCV (issue 18, item 2).

Installing torch and the rest into a fresh environment takes minutes and gigabytes, so the test builds the wheel
from a copy of the sources, installs it with pip (`--no-deps`: the package and its `cad-nb` script) into a fresh
virtual environment, and lends that environment this one's third-party packages: a `.pth` file names a folder of
links to the entries of this site-packages. The links leave out this environment's own cad_nb (an editable install
would shadow the wheel; the test checks `cad_nb.__file__`) and, without the extra, the extra's distributions (the
test checks that they do not import). With the extra, a second folder links those back, and ipykernel's kernel spec
is copied where pip would install it. The third-party versions are this environment's, not a fresh resolution:
what a real install costs was measured by hand (README, "Install"). About a minute on 2 cores: each start of `cad-nb`
imports torch and timm (5-10 s), and the smoke run of 03 and 04 makes its embedded benchmark where it runs."""
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import cad_nb
from cad_nb.reproduce import NOTEBOOK_TOOLS, missing_notebook_tools

REPO = Path(__file__).resolve().parents[1]
SITE = Path(sysconfig.get_paths()["purelib"])
SOURCES = ["pyproject.toml", "README.md", "settings.ini", "cad_nb", "nbs"]  # what the wheel is built from
MISSING_LINE = (
    "cad-nb: error: cad-nb reproduce needs the notebook tools: pip install 'cad_nb[reproduce]' "
    f"(missing: {', '.join(NOTEBOOK_TOOLS.values())})"
)


def installed_entries(dist_name) -> set[str]:
    "The top-level entries of this site-packages that distribution `dist_name` installed (none if it is not here)."
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        return set()
    if Path(dist.locate_file("")).resolve() != SITE.resolve():
        return set()
    return {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}


def link_farm(folder, entries) -> Path:
    "A folder of links to the `entries` of this site-packages."
    folder.mkdir()
    for name in entries:
        (folder / name).symlink_to(SITE / name)
    return folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    "The wheel built from a copy of the sources (the checkout gets no build/ or egg-info)."
    pytest.importorskip("setuptools", reason="building the wheel without isolation needs setuptools here")
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    (whl,) = dist.glob("cad_nb-*.whl")
    return whl


def fresh_env(folder, wheel, with_extra) -> dict:
    "A virtual environment in `folder` holding the wheel; the environment variables that run it."
    venv = folder / "venv"
    if subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode:
        pytest.skip("python -m venv is not available here")
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    subprocess.run(pip + [str(wheel)], check=True, capture_output=True)
    tools = set().union(*(installed_entries(d) for d in NOTEBOOK_TOOLS.values()))
    own = installed_entries("cad_nb") | {"cad_nb"}
    runtime = {p.name for p in SITE.iterdir() if p.suffix != ".pth"} - tools - own
    folders = [link_farm(folder / "site-runtime", runtime)]
    if with_extra:
        folders.append(link_farm(folder / "site-extra", tools))
        spec = Path(sys.prefix) / "share/jupyter/kernels/python3"  # ipykernel's, where pip installs it
        if spec.is_dir():  # (without it jupyter_client starts ipykernel's own spec: this Python, all the same)
            shutil.copytree(spec, venv / "share/jupyter/kernels/python3")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_borrowed_site_packages.pth").write_text("".join(f"{f}\n" for f in folders))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CAD_NB_SETTINGS")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", MPLBACKEND="Agg", JUPYTER_PREFER_ENV_PATH="1")
    return dict(env=env, venv=venv, site=Path(site))


def run(args, env, cwd):
    return subprocess.run(args, env=env["env"], cwd=cwd, capture_output=True, text=True)


def test_without_the_extra_reproduce_names_the_install(tmp_path, wheel):
    env = fresh_env(tmp_path, wheel, with_extra=False)
    work = tmp_path / "work"
    work.mkdir()
    probe = ("import cad_nb, importlib.util as u; print(cad_nb.__file__); "
             f"print([n for n in {list(NOTEBOOK_TOOLS)} if u.find_spec(n)])")
    out = run(["python", "-c", probe], env, work)
    assert out.returncode == 0, out.stderr
    where, importable = out.stdout.splitlines()
    assert Path(where).is_relative_to(env["site"]) and importable == "[]", out.stdout
    res = run(["cad-nb", "reproduce", "--profile", "smoke", "--only", "stats"], env, work)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", MISSING_LINE + "\n")
    assert run(["cad-nb", "--version"], env, work).stdout.strip() == f"cad-nb {cad_nb.__version__}"
    helped = run(["cad-nb", "--help"], env, work)
    assert helped.returncode == 0 and all(c in helped.stdout for c in ("reproduce", "train", "predict", "data"))
    listed = run(["cad-nb", "reproduce", "--list"], env, work)
    assert listed.returncode == 0 and "03_stats" in listed.stdout.split(), listed.stderr
    assert not any(work.iterdir())  # nothing written


def test_with_the_extra_reproduce_runs_from_any_folder(tmp_path, wheel):
    if missing_notebook_tools():
        pytest.skip(f"this environment lacks the reproduce extra's {missing_notebook_tools()} to lend")
    env = fresh_env(tmp_path, wheel, with_extra=True)
    work = tmp_path / "work"
    work.mkdir()
    package = env["site"] / "cad_nb"
    before = sorted(p for p in package.rglob("*") if "__pycache__" not in p.parts)
    res = run(["cad-nb", "reproduce", "--profile", "smoke", "--only", "stats", "synthesis"], env, work)
    assert res.returncode == 0, res.stdout + res.stderr
    figures = work / "_runs" / "smoke" / "figures"
    assert (figures / "table1_dataset_stats.csv").is_file() and (figures / "fig3_region_stats.png").is_file()
    assert (figures / "synthesis_examples.png").is_file()
    manifest = json.loads((figures / "manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["notebooks"].items()} == {"03_stats": "ok", "04_synthesis": "ok"}
    assert (work / ".cache").is_dir() and (work / "outputs" / "smoke" / "03_stats.ipynb").is_file()
    assert sorted(p for p in package.rglob("*") if "__pycache__" not in p.parts) == before  # package untouched
