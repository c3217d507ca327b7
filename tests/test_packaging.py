"""Packaging and the command line: dependencies in step, no torchvision, one-sentence errors."""
import os
import re
import subprocess
import sys
import tomllib

from kit.runtime import PROJECT_ROOT

CONDA_NAMES = {"torch": "pytorch"}  # PyPI name → conda-forge / pytorch-channel name


def test_environment_yml_lists_every_runtime_dependency():
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = (PROJECT_ROOT / "environment.yml").read_text()
    listed = set(re.findall(r"^\s*-\s*([A-Za-z0-9_.-]+)", env, flags=re.M))
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower()
        assert CONDA_NAMES.get(name, name) in listed, f"{name} is in pyproject.toml but not in environment.yml"
    for extra in ("python", "pytorch", "torchvision", "jupyterlab", "ipywidgets", "matplotlib", "seaborn", "pandas", "papermill"):
        assert extra in listed


def test_license_is_an_spdx_expression():
    # PEP 639: setuptools deprecates the `{ text = … }` table (builds stop in 2027) and reads the string from 77 on.
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


def test_the_package_docstring_maps_every_module():
    doc = (PROJECT_ROOT / "kit" / "__init__.py").read_text()
    modules = [p.stem for p in (PROJECT_ROOT / "kit").glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(modules) > 30
    unlisted = [m for m in modules if not re.search(rf"\b{m}\b", doc)]
    assert not unlisted, f"kit/__init__.py does not describe {unlisted}"


def _kit_imports(module: str) -> set[str]:
    """The kit modules `module` imports, at any depth (function-local imports included), read from the source."""
    import ast
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = PROJECT_ROOT / (name.replace(".", "/") + ".py")
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kit"):
                todo += [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("kit")]
    return seen - {module}


def test_training_never_imports_the_results_reader():
    for trainer in ("kit.metatrain", "kit.morphtask", "kit.blockwise", "kit.prefit", "kit.slimmable", "kit.train"):
        reached = _kit_imports(trainer)
        assert "kit.diagnostics" in reached or trainer in ("kit.slimmable", "kit.train"), trainer
        assert not reached & {"kit.results", "kit.report", "kit.figures", "kit.study", "kit.explorer"}, trainer


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)


def test_kit_imports_without_torchvision():
    code = ("import sys, kit, kit.data, kit.models, kit.train, kit.pipeline, kit.plots, kit.profiles, kit.cli, "
            "kit.bench.prior, kit.bench.permute, kit.bench.inr, kit.bench.htty, kit.bench.prefit, kit.bench.explorer; "
            "assert 'torchvision' not in sys.modules, 'kit imported torchvision'")
    assert _run("-c", code).returncode == 0


def test_help_lists_the_commands():
    out = _run("-m", "kit", "--help")
    assert out.returncode == 0
    for command in ("pipeline", "train-prior", "bench", "lab", "data"):
        assert command in out.stdout


def test_bad_input_is_one_sentence_without_traceback(tmp_path):
    for args, words in [(("train-prior", "--profile", "nope", "--out", str(tmp_path)), "Unknown profile"),
                        (("train-prior", "--profile", "smoke", "--depth", "21", "--out", str(tmp_path)), "6n+2"),
                        (("train-prior", "--profile", "smoke", "--dataset", "mnist", "--out", str(tmp_path)), "Unknown dataset"),
                        (("train-prior", "--profile", "smoke", "--set", "optim.lr=fast", "--out", str(tmp_path)), "must be float"),
                        (("pipeline", "--profile", "smoke", "--only", "99", "--out", str(tmp_path)), "No notebook numbered"),
                        (("bench", "explorer", "--checkpoint", str(tmp_path / "none.pt")), "No metamorphic checkpoint")]:
        out = _run("-m", "kit", *args)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and words in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_lab_opens_jupyterlab_on_the_notebooks_with_this_interpreter(monkeypatch):
    import kit.cli
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert kit.cli.main(["lab", "--port", "8890", "--no-browser"]) == 0
    root = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []  # JupyterLab refuses root without it
    assert calls == [[sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={PROJECT_ROOT / 'notebooks'}",
                      "--ServerApp.port=8890", "--ServerApp.port_retries=0", "--no-browser", *root]]
