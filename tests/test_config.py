"""Config validation: profiles, overrides, and one clear error for every kind of bad key or value."""
import re

import pytest

from kit import config as C
from kit.errors import KitError
from kit.profiles import PROFILES


def test_profiles_build_and_differ():
    built = {p: C.build(C.PriorConfig, p) for p in PROFILES}
    assert built["smoke"].model.depth == 8 and built["quick"].model.depth == 20
    assert built["paper"].data.name == "cifar100" and built["paper"].model.depth == 56
    assert built["paper"].optim.epochs > built["quick"].optim.epochs > built["smoke"].optim.epochs
    assert built["quick"].data.train_limit == 30000 and built["smoke"].data.train_limit == 1000  # quick: a subset
    # full and ablations are quick's configs in every section (they differ in the runs the pipeline makes)
    for section in (C.PriorConfig, C.PermuteConfig, C.MorphConfig, C.BaselineConfig, C.ExplorerConfig):
        quick = C.to_dict(C.build(section, "quick"))
        for other in ("full", "ablations"):
            assert {**C.to_dict(C.build(section, other)), "profile": "quick"} == quick
    assert all(cfg.profile == name for name, cfg in built.items())


def test_overrides_dotted_nested_and_none():
    cfg = C.build(C.PriorConfig, "quick", {"optim.epochs": 7, "data": {"name": "cifar10"}, "model.width": None,
                                           "optim.lr": 1})
    assert cfg.optim.epochs == 7 and cfg.data.name == "cifar10"
    assert cfg.model.width == 16  # None keeps the profile's value
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # an int is a valid float
    assert C.build(C.PriorConfig, "quick").optim.epochs != 7  # profiles are not mutated by overrides


@pytest.mark.parametrize("overrides,message", [
    ({"optim.epoch": 3}, "Unknown config key 'optim.epoch'"),
    ({"optimizer": {}}, "Unknown config key 'optimizer'"),
    ({"optim.epochs": "3"}, "'optim.epochs' must be int"),
    ({"optim.epochs": 2.5}, "'optim.epochs' must be int"),
    ({"optim.epochs": True}, "'optim.epochs' must be int"),
    ({"data.flip": 1}, "'data.flip' must be bool"),
    ({"model": 3}, "must be a mapping"),
    ({"optim.epochs": 0}, "optim.epochs must be at least 1"),
    ({"optim.label_smoothing": 1.5}, "label_smoothing must be in [0, 1)"),
    ({"data.batch_size": 0}, "batch_size must be ≥ 1"),
    ({"data.name": "imagenet"}, "Unknown dataset 'imagenet'"),
    ({"model.depth": 21}, "6n+2"),
    ({"runtime.device": "tpu"}, "Unknown device 'tpu'"),
])
def test_bad_overrides_are_rejected(overrides, message):
    with pytest.raises(KitError, match=re.escape(message)):
        C.build(C.PriorConfig, "quick", overrides)


def test_unknown_profile():
    with pytest.raises(KitError, match="Unknown profile 'fast'.*smoke, quick, full, ablations, paper"):
        C.build(C.PriorConfig, "fast")


def test_every_field_is_documented():
    """Each config field carries a trailing comment with its meaning (the style rule), checked on the source."""
    import dataclasses
    import inspect
    for cls in (C.DataConfig, C.ModelConfig, C.OptimConfig, C.RuntimeConfig, C.PriorConfig, C.ExplorerConfig):
        source = inspect.getsource(cls)
        for f in dataclasses.fields(cls):
            line = next(l for l in source.splitlines() if l.strip().startswith(f"{f.name}:"))
            assert "#" in line or "default_factory" in line, f"{cls.__name__}.{f.name} has no comment"


def test_explorer_config_in_every_profile():
    built = {p: C.build(C.ExplorerConfig, p) for p in PROFILES}
    assert built["smoke"].eval_images < built["quick"].eval_images and built["quick"].k_max >= 5
    with pytest.raises(KitError, match="k_max"):
        C.build(C.ExplorerConfig, "quick", {"k_max": 0})
    with pytest.raises(KitError, match="record_gammas"):
        C.build(C.ExplorerConfig, "quick", {"record_gammas": [1.5]})
