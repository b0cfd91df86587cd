"The `cad-nb` runner: the command line, failure reporting, and that tests never touch figures/."
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
CAD_NB = str(Path(sys.executable).with_name("cad-nb"))


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_list_names_the_experiment_notebooks():
    out = subprocess.run([CAD_NB, "reproduce", "--list"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert "03_stats" in out and "00_core" not in out and "99_reproduce" not in out


def test_smoke_run_of_a_real_notebook_leaves_figures_alone():
    before = digest(REPO / "figures")
    res = subprocess.run([CAD_NB, "reproduce", "--profile", "smoke", "--only", "stats"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert digest(REPO / "figures") == before
    smoke_out = REPO / "_runs" / "smoke" / "figures"
    assert (smoke_out / "table1_dataset_stats.csv").exists()
    manifest = json.loads((smoke_out / "manifest.json").read_text())
    assert manifest["notebooks"]["03_stats"]["status"] == "ok" and manifest["profile"] == "smoke"


def test_failing_notebook_named_with_cell_and_others_still_run(tmp_path):
    (tmp_path / "nbs").mkdir()
    (tmp_path / "settings.ini").write_text("[smoke]\nruntime.out_dir = out\ndata.benchmark = smoke\n")
    for name, code in [("01_fails", "1/0"), ("02_runs", "open('ran.txt', 'w').write(profile)")]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("profile = 'x'", metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "nbs" / f"{name}.ipynb")
    res = subprocess.run([CAD_NB, "reproduce", "--profile", "smoke", "--settings", str(tmp_path / "settings.ini")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 1
    assert "01_fails: cell 2 ('1/0'): ZeroDivisionError" in res.stdout
    assert (tmp_path / "nbs" / "ran.txt").read_text() == "smoke"          # the next notebook ran, with the profile
    assert not (tmp_path / "nbs" / "01_fails.ipynb").read_text().count("injected-parameters")  # nbs/ untouched


def test_bad_arguments_are_named():
    res = subprocess.run([CAD_NB, "reproduce", "--only", "no_such_notebook"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0 and "no_such_notebook" in res.stderr
    res = subprocess.run([CAD_NB, "reproduce", "--data-root", "/no/such/dir"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "--data-root /no/such/dir is not a folder" in res.stderr
