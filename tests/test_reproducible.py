"""Same command, same numbers: a second smoke pipeline, in another process, reproduces the first bit for bit.

Every number a notebook records is compared (accuracies, TV, kernel errors, α, losses, costs …); only what measures
the machine rather than the method differs between runs (timings, throughput, provenance), and those keys are
named below. The smoothed prior, the metamorphic networks and the baselines' checkpoints are compared tensor by
tensor."""
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

# Keys whose values describe the run, not its results: they differ between two runs of one command.
_MACHINE_KEYS = ("seconds", "time", "provenance", "latency", "per_second", "train cost")  # numbers only are compared


def _numbers(tree, prefix=""):
    """{'a/b/0': number} for every number in a JSON tree, skipping the machine's keys."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}
    out = {}
    for key, value in items:
        if isinstance(key, str) and any(m in key.lower() for m in _MACHINE_KEYS):
            continue
        out.update(_numbers(value, f"{prefix}/{key}"))
    return out


def _metrics(run: Path) -> dict[str, dict]:
    return {str(p.relative_to(run)): json.loads(p.read_text()) for p in sorted(run.rglob("metrics.json"))
            if ".staging" not in p.parts}


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: a network's state_dict, or a metamorphic network's skeleton and trainables."""
    record = torch.load(path, map_location="cpu", weights_only=True)
    parts = [record[k] for k in ("state_dict", "skeleton", "trainable") if isinstance(record.get(k), dict)]
    return {f"{i}/{k}": v for i, part in enumerate(parts) for k, v in part.items() if isinstance(v, torch.Tensor)}


def test_a_second_smoke_pipeline_in_another_process_gives_identical_numbers(smoke_run, tmp_path):
    first = smoke_run[0]
    again = tmp_path / "again"
    done = subprocess.run([sys.executable, "-m", "kit", "pipeline", "--profile", "smoke", "--out", str(again)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    a, b = _metrics(first), _metrics(again)
    assert a.keys() == b.keys() and len(a) >= 13  # 01, 02, every notebook-03 run, 04 … 07
    compared = 0
    for name in a:
        x, y = _numbers(a[name]), _numbers(b[name])
        assert x.keys() == y.keys(), name
        for key in x:
            same = x[key] == y[key] or (isinstance(x[key], float) and math.isnan(x[key]) and math.isnan(y[key]))
            assert same, f"{name}{key}: {x[key]!r} in the first run, {y[key]!r} in the second"
        compared += len(x)
    accuracies = [k for m in a.values() for k in _numbers(m) if "accuracy" in k]
    assert compared > 200 and len(accuracies) > 50  # the comparison covered the results, not just a header
    for checkpoint in ("02_permutation/smoothed.pt", "03_incremental_metamorphosis/htty/metamorph.pt",
                       "03_incremental_metamorphosis/prefit/metamorph.pt", "04_baselines/individual-0.5/prior.pt"):
        s, t = _tensors(first / checkpoint), _tensors(again / checkpoint)
        assert s.keys() == t.keys() and s, checkpoint
        assert all(torch.equal(s[k], t[k]) for k in s), f"{checkpoint} differs between the two runs"
