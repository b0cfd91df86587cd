"The installed package: importable without nbdev, profiles available outside a checkout, in sync with nbs/."
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (REPO / "cad_nb").glob("*.py") if not p.stem.startswith("_"))


NOTEBOOK_MACHINERY = ["nbdev", "fastcore", "papermill", "ipykernel", "nbformat", "nbclient", "jupyter_client", "cv2"]


def test_every_module_imports_without_nbdev_or_fastcore(tmp_path):
    "Nor papermill, ipykernel, nbformat or OpenCV: `pip install cad_nb` brings none of them (the `reproduce` extra)."
    code = ("import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in NOTEBOOK_MACHINERY)
            + "".join(f"import cad_nb.{m}\n" for m in MODULES)
            + "import cad_nb.cli; cad_nb.cli.make_parser()\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


HEAVY = ["torch", "torchvision", "timm", "scipy", "sklearn", "pandas", "matplotlib", "skimage"]


def test_the_command_line_starts_without_the_heavy_libraries(tmp_path):
    """`cad-nb --help`, `--version` and a usage error import none of torch, timm, scipy, pandas or matplotlib (each
    command imports what it needs when it runs); tests/benchmarks/bench_cli_start.py times the start."""
    code = ("import sys, contextlib, io\nfrom cad_nb.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    codes = [main(['--help']), main(['--version']), main(['train', '--help']), main(['export', '--help']), main(['test'])]\n"
            f"print(codes, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[0, 0, 0, 0, 2] []", out

def test_reproduce_extra_is_what_the_check_names():
    "The `reproduce` extra of pyproject.toml and `cad_nb.reproduce.NOTEBOOK_TOOLS` list the same distributions."
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    from cad_nb.reproduce import NOTEBOOK_TOOLS
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in extras["reproduce"]}
    assert names == set(NOTEBOOK_TOOLS.values())
    assert "cad_nb[reproduce]" in extras["dev"]


def test_deploy_extra_is_what_the_export_module_needs():
    "The `deploy` extra installs what `cad_nb.export` checks for before it exports or runs a file."
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    from cad_nb.export import ENGINE_PACKAGES, EXPORT_PACKAGES
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in extras["deploy"]}
    assert names == {*EXPORT_PACKAGES, *ENGINE_PACKAGES.values()} and "cad_nb[deploy]" in extras["dev"]


def test_profiles_found_outside_a_checkout(tmp_path):
    code = "from cad_nb.settings import load_profile, find_settings; p = load_profile('paper'); print(find_settings(), p.cfrg.epochs)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "cad_nb" in out and out.split()[-1] == "50"


def test_profiles_share_their_settings():
    from cad_nb.settings import PROFILE_NAMES, load_profile
    keys = {n: set(load_profile(n).values) for n in PROFILE_NAMES}
    assert keys["smoke"] == keys["cpu"] == keys["paper"] == keys["paper-smoke"]
    assert load_profile("smoke").path("runtime.out_dir") != load_profile("cpu").path("runtime.out_dir")
