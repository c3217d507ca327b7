"""Weight permutation: the network's function is unchanged, TV drops, the path solver is optimal on small
groups, the groups agree with torch-pruning's dependency graph, and a saved permutation is reused."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from kit import models, paths, permute, train
from kit.errors import KitError


def _net(depth, width, batchnorm=True, seed=0):
    torch.manual_seed(seed)
    model = models.resnet(depth, width, in_channels=3, num_classes=10)
    gen = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            # Residual branches end small, as in trained ResNets, so 27 blocks keep logits of a realistic size.
            scale = 0.2 if name.endswith("bn2") else 1.0
            m.weight.data.copy_(scale * (1 + 0.2 * torch.randn(m.num_features, generator=gen)))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    model.eval()
    return model if batchnorm else models.fold_bn(model)


@pytest.mark.parametrize("depth,width", [(20, 16), (20, 64), (56, 16), (56, 64)])
@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "folded"])
def test_permuting_channels_preserves_logits(depth, width, batchnorm):
    model = _net(depth, width, batchnorm, seed=depth + width)
    groups = permute.channel_groups(model)
    assert len(groups) == 3 + 3 * (depth - 2) // 6  # 3 residual streams + one hidden group per block
    rng = np.random.default_rng(0)
    perm = {g.name: rng.permutation(g.channels(model.state_dict())).tolist() for g in groups}
    shuffled = models.from_arch(model.arch).eval()
    shuffled.load_state_dict(permute.apply_permutation(model.state_dict(), groups, perm))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = model(x), shuffled(x)
    assert 0.1 < ref.abs().max().item() < 100  # logits of a realistic size: the bound below is then meaningful
    assert (out - ref).abs().max().item() <= 1e-4
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert not torch.equal(shuffled.state_dict()["layer1.0.conv1.weight"], model.state_dict()["layer1.0.conv1.weight"])
    assert torch.equal(shuffled.state_dict()["fc.bias"], model.state_dict()["fc.bias"])  # classes never move


def test_smooth_reports_equivalence_and_lower_tv():
    model = _net(20, 16, batchnorm=False)
    x = torch.randn(8, 3, 32, 32)
    smoothed, report = permute.smooth(model, x, method="tsp")
    assert report["max_logit_diff"] <= 1e-4
    assert report["tv_after"] < report["tv_before"] and 0 < report["tv_reduction"] < 1
    assert report["tv_after"] == pytest.approx(permute.total_variation(smoothed)[0])
    assert set(report["tv_per_tensor_before"]) == {n for n, _ in model.named_parameters()}
    assert len(report["groups"]) == 12 and all(r["path_after"] <= r["path_before"] + 1e-6 for r in report["groups"])


@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "folded"])
def test_group_paths_account_for_all_permutable_tv(batchnorm):
    """TV = Σ group path lengths + the part no permutation can touch: fc along the class axis, fc.bias and
    the stem along the image-channel axis."""
    model = _net(8, 8, batchnorm=batchnorm)
    _, report = permute.smooth(model, torch.randn(2, 3, 32, 32), method="random", seed=3)
    sd = model.state_dict()
    diff = lambda t, axis: (t.double().diff(dim=axis)).abs().sum().item()
    untouchable = diff(sd["fc.weight"], 0) + diff(sd["fc.bias"], 0) + diff(sd["stem.conv.weight"], 1)
    assert report["tv_before"] - sum(r["path_before"] for r in report["groups"]) == pytest.approx(untouchable, rel=1e-9)
    assert report["tv_after"] - sum(r["path_after"] for r in report["groups"]) == pytest.approx(untouchable, rel=1e-9)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from kit import config as C
    result = train.train_prior(C.build(C.PriorConfig, "smoke"), tmp_path_factory.mktemp("prior"))
    return models.fold_bn(result.model), result


def test_tsp_beats_random_and_greedy_on_a_trained_network(trained):
    model, _ = trained
    x = torch.randn(4, 1, 28, 28)
    tv = {m: permute.smooth(model, x, method=m)[1]["tv_after"]
          for m in ("identity", "random", "greedy", "tsp")}
    assert tv["tsp"] < tv["identity"] and tv["tsp"] < tv["random"] and tv["tsp"] < tv["greedy"]


@pytest.mark.parametrize("n", [3, 5, 6, 8])
@pytest.mark.parametrize("method", ["tsp", "2opt"])
def test_path_is_near_optimal_on_small_groups(n, method):
    """Brute force as the oracle: a local search promises no optimum, but on a few channels it comes close."""
    for case in range(10):
        rng = np.random.default_rng(100 * n + case)
        dist = paths.l1_distances(torch.from_numpy(rng.normal(size=(n, 12))))
        best = min(paths.path_length(dist, p) for p in itertools.permutations(range(n)))
        order, _ = paths.shortest_path(dist, method)
        assert sorted(order.tolist()) == list(range(n))
        assert paths.path_length(dist, order) <= (1.02 if method == "tsp" else 1.25) * best
        assert paths.path_length(dist, order) <= paths.path_length(dist, paths.greedy_path(dist)) + 1e-9


def _reversals(order):
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            trial = order.copy()
            trial[i:j + 1] = trial[i:j + 1][::-1]
            yield trial


def _relocations(order, longest=3):
    for length in range(1, longest + 1):
        for i in range(len(order) - length + 1):
            run, rest = order[i:i + length], np.concatenate([order[:i], order[i + length:]])
            for at in range(len(rest) + 1):
                for piece in (run, run[::-1]):
                    yield np.concatenate([rest[:at], piece, rest[at:]])


@pytest.mark.parametrize("or_opt", [False, True], ids=["2opt", "2opt+oropt"])
def test_descent_reaches_a_local_optimum_from_a_random_start(or_opt):
    """Brute force over every move the descent considers: none shortens its result any more."""
    rng = np.random.default_rng(7)
    dist = paths.l1_distances(torch.from_numpy(rng.normal(size=(14, 6))))
    start = rng.permutation(14)
    order = paths.descend(dist, start.copy(), or_opt=or_opt)
    assert sorted(order.tolist()) == list(range(14))
    length = paths.path_length(dist, order)
    assert length < paths.path_length(dist, start)
    moves = itertools.chain(_reversals(order), _relocations(order) if or_opt else ())
    assert all(paths.path_length(dist, trial) >= length - 1e-9 for trial in moves)


def test_or_opt_finds_what_2opt_cannot():
    """A channel that belongs elsewhere is moved in one relocation; 2-opt alone leaves a longer path here."""
    rng = np.random.default_rng(11)
    worse = 0
    for _ in range(20):
        dist = paths.l1_distances(torch.from_numpy(rng.normal(size=(30, 8))))
        greedy = paths.greedy_path(dist)
        two, both = paths.descend(dist, greedy, or_opt=False), paths.descend(dist, greedy)
        assert paths.path_length(dist, both) <= paths.path_length(dist, greedy) + 1e-9
        worse += paths.path_length(dist, two) > paths.path_length(dist, both) + 1e-9
    assert worse > 0


def test_the_search_is_deterministic_and_never_reads_a_clock(monkeypatch):
    """Same distances and seed, same order, however time passes: a clock read anywhere in the solver would show."""
    import time
    rng = np.random.default_rng(5)
    dist = paths.l1_distances(torch.from_numpy(rng.normal(size=(64, 16))))
    reference, _ = paths.shortest_path(dist, "tsp", seed=3)
    ticks = iter(np.cumsum(rng.exponential(1e3, size=100000)))  # a clock that jumps by ~1000 s per read
    for name in ("time", "perf_counter", "monotonic", "process_time"):
        monkeypatch.setattr(time, name, lambda: next(ticks))
    again, _ = paths.shortest_path(dist, "tsp", seed=3)
    assert np.array_equal(reference, again)
    model, x = _net(8, 4, batchnorm=False), torch.randn(2, 3, 8, 8)
    assert permute.smooth(model, x)[1] == permute.smooth(model, x)[1]  # the whole report: no timing in it either


def test_greedy_is_the_best_nearest_neighbour_path():
    rng = np.random.default_rng(3)
    dist = paths.l1_distances(torch.from_numpy(rng.normal(size=(12, 5))))

    def from_start(s):  # the textbook loop
        path, left = [s], set(range(12)) - {s}
        while left:
            path.append(min(left, key=lambda k: dist[path[-1], k]))
            left.remove(path[-1])
        return path
    best = min(paths.path_length(dist, from_start(s)) for s in range(12))
    assert paths.path_length(dist, paths.greedy_path(dist)) == pytest.approx(best)


def test_points_on_a_line_are_visited_end_to_end():
    """Points on a line: the only optimal open paths run from one end to the other."""
    pos = np.array([0.0, 7.0, 2.0, 9.0, 4.0, 1.0, 8.0, 3.0, 5.0, 6.0] * 3)[:25] + np.arange(25) * 10.0
    dist = np.abs(pos[:, None] - pos[None, :])
    order, _ = paths.shortest_path(dist, "tsp")
    assert paths.path_length(dist, order) == pytest.approx(pos.max() - pos.min())


def test_groups_match_torch_pruning_dependency_graph():
    tp = pytest.importorskip("torch_pruning")
    model = _net(20, 16, batchnorm=False)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 32, 32))
    names = {m: n for n, m in model.named_modules()}
    theirs = set()
    for group in dg.get_all_groups(ignored_layers=[model.fc], root_module_types=[nn.Conv2d, nn.Linear]):
        members = set()
        for dep, _ in group:
            fn, layer = dep.handler.__name__, dep.target.module
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and fn in ("prune_out_channels", "prune_in_channels"):
                members.add((names[layer], 0 if fn == "prune_out_channels" else 1))
        theirs.add(frozenset(members))
    ours = {frozenset((n.rsplit(".", 1)[0], a) for n, a in g.members if n.endswith(".weight"))
            for g in permute.channel_groups(model)}
    assert ours == theirs


def test_saved_permutation_is_reused(trained, tmp_path):
    _, result = trained
    x = torch.randn(4, 1, 28, 28)
    first, r1 = permute.smooth_checkpoint(result.checkpoint, tmp_path / "smoothed.pt", x)
    again, r2 = permute.smooth_checkpoint(result.checkpoint, tmp_path / "smoothed.pt", x)
    assert not r1["reused_permutation"] and r2["reused_permutation"]
    assert r1["permutation"] == r2["permutation"]
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())
    loaded, record = train.load_prior(tmp_path / "smoothed.pt")  # same record layout as prior.pt
    assert record["report"]["permutation"] == r1["permutation"]
    with torch.no_grad():
        assert torch.equal(loaded(x), first.eval()(x))


def test_saved_permutation_is_not_reused_for_other_settings(trained, tmp_path):
    _, result = trained
    x = torch.randn(4, 1, 28, 28)
    out = tmp_path / "smoothed.pt"
    permute.smooth_checkpoint(result.checkpoint, out, x, method="random", seed=1, progress=False)
    _, same = permute.smooth_checkpoint(result.checkpoint, out, x, method="random", seed=1, progress=False)
    _, other_seed = permute.smooth_checkpoint(result.checkpoint, out, x, method="random", seed=2, progress=False)
    _, other_method = permute.smooth_checkpoint(result.checkpoint, out, x, method="greedy", seed=2, progress=False)
    assert same["reused_permutation"] and not other_seed["reused_permutation"] and not other_method["reused_permutation"]
    assert other_seed["permutation"] != same["permutation"]


def test_failed_smoothing_writes_nothing(tmp_path):
    from kit import io
    broken = _net(8, 4, batchnorm=True)
    with torch.no_grad():
        broken.layer1[0].conv2.weight[0, 0, 0, 0] = float("inf")
    io.save_torch({"arch": broken.arch, "state_dict": broken.state_dict()}, tmp_path / "prior.pt")
    with pytest.raises(KitError, match="non-finite values .NaN or infinity. in layer1.0.conv2.weight"):
        permute.smooth_checkpoint(tmp_path / "prior.pt", tmp_path / "smoothed.pt", torch.randn(1, 3, 8, 8))
    assert not (tmp_path / "smoothed.pt").exists()


def test_bad_input_names_the_tensor():
    model = _net(8, 4, batchnorm=False)
    broken = _net(8, 4, batchnorm=False)
    with torch.no_grad():
        broken.layer2[0].conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(KitError, match="layer2.0.conv1.weight holds NaN"):
        permute.smooth(broken, torch.randn(1, 3, 32, 32))
    groups = permute.channel_groups(model)
    groups[0].members.append(("layer3.0.conv2.weight", 0))  # 16 channels in a group of 4
    with pytest.raises(KitError, match="tensor layer3.0.conv2.weight has 16 channels"):
        permute.check_groups(model.state_dict(), groups)
    with pytest.raises(KitError, match="No permutable channel groups"):
        permute.channel_groups(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(KitError, match="Unknown permutation method"):
        paths.shortest_path(np.zeros((4, 4)), "annealing")
