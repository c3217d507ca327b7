"""Where and how a run executes: device choice, seeding, mixed precision, provenance.

Every run records `provenance()` next to its results, so a number can always be traced
back to the code (git revision), the libraries (versions) and the machine that made it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import random
import re
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from kit.errors import KitError

DEVICES = ("auto", "cpu", "cuda")
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout the kit is installed from (editable install)


def project_path(path: str | Path) -> Path:
    """A relative path taken from the project root, so notebooks (cwd notebooks/) and the command line
    (cwd anywhere) mean the same folder by 'data' or 'results/…'; absolute paths are kept."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def pick_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when present, else CPU; 'cuda' without a GPU is an error, not a fallback."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise KitError(f"Unknown device {name!r}; use one of {', '.join(DEVICES)} (or cuda:N).")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KitError(f"Device {name!r} was asked for but no CUDA GPU is visible; use device='cpu' or 'auto'.")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (no loss scaling needed); plain float32 on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def git_revision(path: str | Path = ".") -> str:
    """The commit of the checkout holding `path` (with '+dirty' if it has changes), or 'unknown'."""
    try:
        cwd = Path(path).resolve()
        cwd = cwd if cwd.is_dir() else cwd.parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what the platform reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def math_libraries() -> dict:
    """The float kernels torch runs on this CPU: the instruction set it dispatches to and the MKL / oneDNN builds.
    Results are bit-identical only where these, the CPU model and the thread count all agree."""
    built = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", built)
    onednn = re.search(r"(?:oneDNN|MKL-DNN) v([\d.]+)", built)
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": mkl.group(1) if mkl and torch.backends.mkl.is_available() else "not available",
            "onednn": onednn.group(1) if onednn and torch.backends.mkldnn.is_available() else "not available"}


def provenance(device: torch.device | None = None) -> dict:
    """Versions, git revision, machine (CPU model, threads, math libraries) and time: what a result needs to be
    traced back, and what decides whether a rerun elsewhere can give the same bits."""
    kit_dir = Path(__file__).resolve().parent
    info = {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(kit_dir),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_interop_threads": torch.get_num_interop_threads(),
        "math_libraries": math_libraries(),
        "versions": {d: _version(d) for d in ("torch", "numpy", "papermill", "matplotlib", "torch-pruning", "kit")},
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info
