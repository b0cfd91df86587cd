"The installed package: importable without nbdev, profiles available outside a checkout, in sync with nbs/."
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (REPO / "cad_nb").glob("*.py") if not p.stem.startswith("_"))


def test_every_module_imports_without_nbdev_or_fastcore(tmp_path):
    code = ("import sys; sys.modules['nbdev'] = None; sys.modules['fastcore'] = None\n"
            + "".join(f"import cad_nb.{m}\n" for m in MODULES))
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_profiles_found_outside_a_checkout(tmp_path):
    code = "from cad_nb.settings import load_profile, find_settings; p = load_profile('paper'); print(find_settings(), p.cfrg.epochs)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "cad_nb" in out and out.split()[-1] == "50"


def test_profiles_share_their_settings():
    from cad_nb.settings import PROFILE_NAMES, load_profile
    keys = {n: set(load_profile(n).values) for n in PROFILE_NAMES}
    assert keys["smoke"] == keys["cpu"] == keys["paper"] == keys["paper-smoke"]
    assert load_profile("smoke").path("runtime.out_dir") != load_profile("cpu").path("runtime.out_dir")
