"""A refactor changes no result: every method's metrics on the smoke benchmark, pinned (tests/data/smoke_results.json).

The pinned figures were recorded before issue 21's restructuring (settings per concern, the method registry) and
were reproduced bit for bit after it. They were recorded once more with the one training loop (`train_loop`): the
old `fit` wrapped each epoch's DataLoader in tqdm.auto, which opens an iterator of its own on construction, so the
shuffling of every CFRG and RD epoch came from the second draw of the epoch's generator. With that extra iterator
put back, the new loop gives the old figures to the last bit; DeSTSeg, PaDiM and the multi-task run did not move. SimpleNet's
figures were added when it was registered; the whole file was then recorded again on an AMD EPYC (below). DRAEM's figures
were added when it was registered (the other methods' figures came out the same to the bit). RD++'s figures were added
when it was registered, recorded alone (runner.METHODS set to RD++) on a machine other than the recording's. FastFlow's figures
were added when it was registered, recorded on a machine whose torch reports AVX2 for the same AMD EPYC model (the
other methods' figures are the AVX512 recording's, unchanged): re-record its rows there for bit-equality. Bit-equality holds for one thread and the library versions of the recording
(torch below) on one kind of CPU: torch picks its vector kernels for the processor (`cpu_capability`), and on
another kind the same code, torch and thread count moves the pixel metrics in the last digits (the recording made
on the previous machine differs from this one's by at most 1.3e-3, in 25 of the 46 figures; every I-AUROC and the
multi-task figures were equal), so the test is exact only where torch and the CPU kernels are the recording's,
and allows 0.05 otherwise. The kernels' name is not enough: an AMD EPYC and the machine before it both report
AVX512 and differ in those 25 figures (up to 1.26e-3), so the file also records the processor's model name.
Re-record on purpose only: python tests/benchmarks/record_results.py --profile smoke --out tests/data/smoke_results.json
"""
import importlib.util
import json
import math
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PINNED = json.loads((HERE / "data" / "smoke_results.json").read_text())


def _record_results():
    spec = importlib.util.spec_from_file_location("record_results", HERE / "benchmarks" / "record_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_metrics_equal_the_pinned_ones():
    found = _record_results().record("smoke", categories=2, multitask=True)
    here = (torch.__version__, torch.backends.cpu.get_cpu_capability(), _record_results().cpu_model())
    same = here == (PINNED["torch"], PINNED["cpu_capability"], PINNED.get("cpu_model"))
    tolerance = 1e-12 if same else 0.05
    assert found["metrics"].keys() == PINNED["metrics"].keys()
    for key, metrics in PINNED["metrics"].items():
        for name, value in metrics.items():
            new = found["metrics"][key][name]
            assert (math.isnan(value) and math.isnan(new)) or abs(new - value) <= tolerance, (key, name, value, new)
