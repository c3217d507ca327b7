"""Command line: `python -m kit <command>` (also installed as `kit`).

  pipeline     run the numbered notebooks headlessly (papermill), in order; resumes, skipping finished runs
  train-prior  train the prior network without a notebook
  morph        export a plain network at a compression ratio γ from a metamorphic checkpoint
  evaluate     accuracy, widths and cost of a metamorphic checkpoint at several γ (table + CSV)
  summary      the table of a run folder's notebook-03 runs (mean ± std over seeds) and paper 000's comparisons
  bench        benchmarks, one module each in kit/bench/ (`bench prior | permute | inr | htty | prefit | blockwise | limits | explorer`)
  lab          open JupyterLab on the notebooks, in this environment
  data         check that a dataset is available (fetch CIFAR when the network allows)
Errors the user can fix are printed as one sentence, without a traceback; so is a write that fails (a full disk),
which leaves no partial file. A command whose reader goes away (`kit summary | head -1`) ends quietly (exit 141).
Relative paths are taken from the project root (the checkout the kit is installed from), whatever the current
folder: the notebooks (which run in notebooks/) and every command mean the same file by 'results/…'.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kit import arguments, terminal
from kit.config import DATASETS
from kit.errors import KitError
from kit.profiles import PROFILES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", help=f"{' | '.join(PROFILES)} (default quick)")
    p.add_argument("--dataset", default=None, help="fashion-mnist | cifar10 | cifar100 (default: the profile's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kit", description="Research kit for metamorphic neural networks.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("pipeline", help="run the numbered notebooks headlessly with papermill")
    _common(p)
    p.add_argument("--out", default=None, help="run folder (default results/<profile>-<dataset>)")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebook numbers, e.g. --only 01")
    p.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell (default: no limit)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seeds of each HTTY/NeuMeta run of notebook 03 (default: 3 in full and paper, else 1)")
    p.add_argument("--force", action="store_true", help="rerun every notebook, even those already up to date")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="a config field of one notebook's config: prior.* (01), permute.* (02), morph.* (03), "
                        "baseline.* (04), explorer.* (06), e.g. morph.inr.hidden=256 prior.optim.lr=0.05")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("[NN:]NAME", "VALUE"),
                   help="a notebook parameter, for every notebook declaring NAME (or notebook NN only), "
                        "e.g. -p EPOCH_SCALE 3 -p 04:FINETUNE_EPOCHS 1; VALUE is JSON or a bare string")

    p = sub.add_parser("train-prior", help="train the prior ResNet (what notebook 01 does)")
    _common(p)
    p.add_argument("--out", required=True, help="output folder for prior.pt, checkpoint.pt, metrics.json")
    p.add_argument("--depth", type=int, help="ResNet depth 6n+2 (default: the profile's)")
    p.add_argument("--width", type=int, help="first-stage width (default: the profile's)")
    p.add_argument("--epochs", type=int, help="epochs (default: the profile's)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="any other config field, e.g. optim.lr=0.05 data.batch_size=256")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")

    p = sub.add_parser("morph", help="export a plain ResNet at γ from a metamorph.pt (runs without the INR)")
    p.add_argument("--checkpoint", required=True, help="metamorph.pt written by notebook 03")
    p.add_argument("--gamma", type=float, required=True, help="compression ratio γ (< 1; negative = wider than the prior)")
    p.add_argument("--out", required=True, help="file to write (same layout as prior.pt: arch + state_dict)")
    p.add_argument("--k", type=int, default=None, help="generations averaged (default: the checkpoint's k_samples)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the averaged generations (default 0)")

    p = sub.add_parser("evaluate", help="accuracy of a metamorph.pt at several γ; prints a table, writes a CSV")
    p.add_argument("--checkpoint", required=True, help="metamorph.pt written by notebook 03")
    p.add_argument("--gammas", required=True, help="comma-separated γ, e.g. 0,0.25,0.5,0.75,-0.25")
    p.add_argument("--k", type=int, default=None, help="generations averaged (default: the checkpoint's k_samples)")
    p.add_argument("--split", default="test", choices=["test", "val"], help="data split (default test)")
    p.add_argument("--csv", default=None, help="CSV to write (default: evaluate.csv next to the checkpoint)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the averaged generations (default 0)")

    p = sub.add_parser("summary", help="table of a run folder's metamorphic runs: mean ± std over seeds, per γ")
    p.add_argument("folder", help="a run folder (e.g. results/full-fashion-mnist) or its 03_incremental_metamorphosis/")
    p.add_argument("--setting", default=None, help="which block setting to tabulate (default: the most common)")

    p = sub.add_parser("bench", help="benchmarks, measured side by side in one run")
    p.add_argument("what", choices=["prior", "permute", "inr", "htty", "prefit", "blockwise", "limits", "explorer"],
                   help="prior: training throughput against a bare PyTorch loop; "
                        "permute: ResNet-56 smoothing, the kit's search against fast-tsp: time, TV reduction, repeatability; "
                        "inr: generating a ResNet-56 last stage, kit against per-tensor and NeuMeta-style code; "
                        "htty: one HTTY step (4 configurations) against 4 plain prior steps, and the INR's share; "
                        "prefit: the pre-fit recipe's pre-fit per block, one step against one HTTY step, and its time "
                        "to the quick targets in a run folder (--run); "
                        "blockwise: the block-wise recipe's seconds per phase, one distillation step against one "
                        "end-to-end step, and its figures and time against the quick targets in a run folder (--run); "
                        "limits: what limits the block-wise recipe of a run folder (--run): free blocks of the same "
                        "width, more distillation steps, regression onto free blocks, pre-fit precision (≈ 35 min); "
                        "explorer: the γ explorer's update latency on a metamorph.pt (default: the quick run's HTTY)")
    p.add_argument("--profile", default="quick", help="htty: the profile whose network and INR are timed (default quick)")
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint", help="permute: smooth this prior.pt instead of fresh ResNet-56s; explorer: the "
                                        "metamorph.pt to explore")
    p.add_argument("--run", default="results/quick-fashion-mnist",
                   help="prefit, blockwise, limits: the run folder whose smoothed prior and records are read (default: make run's)")
    p.add_argument("--kicks", type=int, default=20, help="permute: the kit's search rounds per group (default 20)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="steps per round (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")

    p = sub.add_parser("lab", help="open JupyterLab on notebooks/ in this environment (the kit's kernel)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: JupyterLab's, 8888 or the next free)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser (e.g. on a remote machine)")

    p = sub.add_parser("data", help="check that a dataset is available (downloads CIFAR when possible)")
    p.add_argument("name", choices=DATASETS)
    p.add_argument("--root", default="data", help="dataset folder (default data/ in the project)")
    return ap


def project_path(path: str) -> Path:
    """kit.runtime.project_path, imported on use: `python -m kit --help` does not import torch."""
    from kit.runtime import project_path as resolve
    return resolve(path)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(arguments.attach_numbers(sys.argv[1:] if argv is None else list(argv)))
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`kit summary | head -1`): it has what it wanted
        terminal.silence("stdout")
        return 141  # 128 + SIGPIPE, what a shell reports for a command that stopped on a closed pipe


def _writing(what: str, path: Path, write):
    """write() (an atomic writer of `kit.io`) with a failed write (a full disk, a read-only folder) as one sentence;
    the atomic writer has already removed its temporary file, so nothing partial is left."""
    try:
        return write()
    except OSError as err:
        raise KitError(f"The {what} {path} could not be written ({err.strerror or err}), so it was left as it was; "
                       "free some space or name a writable place.") from None


def _dispatch(args) -> int:
    if args.command == "pipeline":
        from kit import pipeline
        from kit import config as C
        dataset = args.dataset or C.build(C.PriorConfig, args.profile).data.name  # the profile's by default
        out = project_path(args.out or f"results/{args.profile}-{dataset}")
        records = pipeline.run(args.profile, args.dataset, out, args.device, args.seed, args.only, timeout=args.timeout,
                               seeds=args.seeds, force=args.force, overrides=arguments.pairs(args.set),
                               params=[(name, arguments.parse_value(value)) for name, value in args.parameter])
        skipped = sum(r["status"] == "skipped" for r in records)
        print(f"pipeline finished: {len(records)} run(s), {skipped} up to date and skipped, "
              f"in {sum(r['seconds'] for r in records):.0f} s -> {out}")
    elif args.command == "train-prior":
        from kit import config as C
        from kit import io, train
        overrides = {"seed": args.seed, "runtime.device": args.device, "data.name": args.dataset,
                     "model.depth": args.depth, "model.width": args.width, "optim.epochs": args.epochs,
                     **arguments.pairs(args.set)}
        cfg = C.build(C.PriorConfig, args.profile, overrides)
        out = io.writable_dir(project_path(args.out), "--out folder")
        from kit import lock
        with lock.hold(out, "train-prior"):  # a folder another process writes (a pipeline's, …): refused
            result = train.train_prior(cfg, out, resume=not args.no_resume)
            io.write_metrics(out, result.metrics, cfg)
        print(f"prior: test accuracy {result.metrics['test_accuracy']:.4f} (epoch {result.metrics['best_epoch']}, "
              f"{result.metrics['parameters']:,} parameters) -> {result.checkpoint}")
    elif args.command == "morph":
        from kit import inr, io, metamorph, models
        checkpoint = project_path(args.checkpoint)
        arguments.finite_gamma(args.gamma)
        if args.k is not None:
            inr.check_k(args.k, "--k asks for")
        out = io.check_target(project_path(args.out), "--out file", inputs=(checkpoint,))  # before any work
        net, record = metamorph.load(checkpoint)
        k = record["config"]["k_samples"] if args.k is None else args.k
        model = net.export(args.gamma, k, args.seed)
        extra = metamorph.export_record(record, checkpoint, args.gamma, k, args.seed)
        path = _writing("--out file", out, lambda: models.save_plain(model, out, **extra))
        cost = net.cost(args.gamma, record["input_shape"])
        print(f"γ = {args.gamma}: widths {net.widths(args.gamma)}, {cost['parameters']:,} parameters, "
              f"{cost['macs'] / 1e6:.1f} M MACs, K = {k} -> {path}")
    elif args.command == "evaluate":
        _evaluate(args)
    elif args.command == "summary":
        _summary(args)
    elif args.command == "bench":
        # One benchmark module imported per run: each loads only what it measures.
        if args.what == "prior":
            from kit.bench import prior as bench
            bench.print_prior(bench.bench_prior(args.device, args.batch_size, args.steps, args.rounds))
        elif args.what == "htty":
            from kit.bench import htty as bench
            bench.print_htty(bench.bench_htty(args.profile, args.device, rounds=args.rounds))
        elif args.what == "prefit":
            from kit.bench import prefit as bench
            bench.print_prefit(bench.bench_prefit(args.run, args.profile, args.device, args.rounds))
        elif args.what == "blockwise":
            from kit.bench import blockwise as bench
            bench.print_blockwise(bench.bench_blockwise(args.run, "blockwise", args.device, args.rounds))
        elif args.what == "limits":
            from kit.bench import limits as bench
            bench.print_limits(bench.bench_limits(args.run))
        elif args.what == "explorer":
            from kit.bench import explorer as bench
            bench.print_explorer(bench.bench_explorer(args.checkpoint, args.profile, args.device))
        elif args.what == "inr":
            from kit.bench import inr as bench
            bench.print_inr(bench.bench_inr(args.device, rounds=args.rounds))
        else:
            from kit.bench import permute as bench
            bench.print_permute(bench.bench_permute(kicks=args.kicks, checkpoint=args.checkpoint))
    elif args.command == "lab":
        return _lab(args)
    elif args.command == "data":
        from kit import config as C
        from kit import data as D
        d = D.load(C.DataConfig(name=args.name, root=args.root, batch_size=1))
        sizes = ", ".join(f"{k} {len(s)}" for k, s in d.splits.items())
        print(f"{args.name}: {d.num_classes} classes, images {d.input_shape}, {sizes}")
    return 0



def _lab(args) -> int:
    """JupyterLab from this interpreter's environment, rooted at notebooks/: its kernel imports this kit."""
    import importlib.util
    import os
    import subprocess
    from kit.runtime import PROJECT_ROOT
    if args.port is not None and not 1 <= args.port <= 65535:
        raise KitError(f"--port must be a port number from 1 to 65535; got {args.port}.")
    if importlib.util.find_spec("jupyterlab") is None:
        raise KitError("JupyterLab is not installed in this environment; run `make setup` (or pip install -e .).")
    if args.port is not None:
        _free_port(args.port)
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={PROJECT_ROOT / 'notebooks'}"]
    # a port asked for is that port or nothing: JupyterLab would otherwise move to the next free one unannounced
    command += [f"--ServerApp.port={args.port}", "--ServerApp.port_retries=0"] if args.port is not None else []
    command += ["--no-browser"] if args.no_browser else []
    command += ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []  # containers often run as root
    return subprocess.call(command)


def _free_port(port: int) -> None:
    """One sentence when another program listens on `port` on this machine (where JupyterLab serves: localhost)."""
    import errno
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as JupyterLab binds: a closed port is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise KitError(f"Port {port} is in use by another program (another JupyterLab?); name a free one with "
                               "--port, or leave --port out to let JupyterLab pick one.") from None
            raise KitError(f"Port {port} cannot be served on this machine ({err.strerror}); name another with "
                           "--port.") from None


def _evaluate(args) -> None:
    from tqdm.auto import tqdm

    from kit import data as D
    from kit import inr, io, metamorph, morphtask
    gammas = arguments.parse_gammas(args.gammas)
    if args.k is not None:
        inr.check_k(args.k, "--k asks for")
    checkpoint = project_path(args.checkpoint)
    out = project_path(args.csv) if args.csv else checkpoint.resolve().parent / "evaluate.csv"
    io.check_target(out, "--csv file", inputs=(checkpoint,))  # before any work
    net, record = metamorph.load(checkpoint)
    cfg = record["config"]
    k = cfg["k_samples"] if args.k is None else args.k
    for g in gammas:
        net.widths(g)  # every γ checked before any work
    data = D.for_prior(record["prior_config"], args.device)
    pool = metamorph.pool_gammas(cfg["gamma_max"], cfg["pool_size"])
    net.to(data.device)
    accuracy = {}  # one γ at a time, for the progress bar: each γ's noise is seeded alone, so the numbers are the same
    for g in tqdm(gammas, desc="evaluate", unit="γ", disable=len(gammas) < 2):
        accuracy.update(morphtask.evaluate_gammas(net, data, [g], k, args.split, seed=args.seed))
    net.to("cpu")
    rows = []
    for g in gammas:
        cost = net.cost(g, record["input_shape"])
        rows.append({"gamma": metamorph.gamma_key(g), "kind": net.kind(g, pool),
                     "widths": " ".join(str(h) for h in net.widths(g).values()), "parameters": cost["parameters"],
                     "macs": cost["macs"], f"{args.split}_accuracy": accuracy[metamorph.gamma_key(g)], "k": k})
    print(f"{'γ':>8} {'kind':>8} {'widths':>12} {'parameters':>11} {'MACs (M)':>9} {args.split + ' acc':>9}")
    for r in rows:
        print(f"{r['gamma']:>8} {r['kind']:>8} {r['widths']:>12} {r['parameters']:>11,} {r['macs'] / 1e6:>9.2f} "
              f"{100 * r[args.split + '_accuracy']:>8.2f}%")
    _writing("--csv file", out, lambda: io.write_csv(rows, out))
    print(f"K = {k} generations averaged -> {out}")


SLIMMABLE = "slimmable (US-Nets, notebook 04)"  # its row in `kit summary`


def _summary(args) -> None:
    from kit import diagnostics, io, metamorph, records, results
    folder = project_path(args.folder)
    if not folder.is_dir():
        raise KitError(f"{folder} is not a folder; point at a run folder written by `python -m kit pipeline`.")
    runs = results.morph_runs(folder)
    if not runs:
        raise KitError(f"No finished notebook-03 run (a metrics.json under {results.MORPH_FOLDER}/) in {folder}; "
                       "point at a run folder written by `python -m kit pipeline`.")
    summary = results.summarise(runs, args.setting)
    prior = results.prior_accuracy(folder, runs)
    base_path = folder / "04_baselines" / "metrics.json"
    base = records.check_baselines(io.read_json(base_path), base_path) if base_path.is_file() else None
    slim = results.slimmable_row(base, next(iter(summary.values()))["setting"])
    if slim is not None:  # notebook 04's baseline on the same blocks, in the same table
        summary[SLIMMABLE] = slim
    seeds = sorted({row["seeds"] for row in summary.values()})
    over = "1 seed, no spread" if seeds == [1] else "mean ± std over the seeds in the seeds column"
    ks = sorted({k for row in summary.values() for k in row["k_samples"]})
    averaged = f"K = {', '.join(map(str, ks))} generations averaged at the training noise" if ks else "K-averaged"
    print(f"setting {next(iter(summary.values()))['setting']}; test accuracy (%), {over}; {averaged} (the tables of "
          "notebook 05 use these: the papers' evaluation)\n")
    print(results.table(summary, prior))
    single = {name: {**row, "accuracy": row["accuracy_k1"]} for name, row in summary.items() if row["accuracy_k1"]}
    if single:
        print("\nK = 1 (the noise-free generation alone: what one export costs):\n")
        print(results.table(single, prior))
    for name, row in summary.items():
        if row["train_seconds"] is None:
            print(f"{name}: training time not recorded")
            continue
        mean, std = row["train_seconds"]
        print(f"{name}: training {mean:.0f} ± {std:.0f} s" if row["seeds"] > 1 else f"{name}: training {mean:.0f} s")
    if {"htty", "neumeta"} <= set(summary):
        cmp = results.comparison(summary, prior)
        print("\nHTTY − NeuMeta per γ (points; beyond the seed spread when larger than std_htty + std_neumeta):")
        for g, m in cmp["margin"].items():
            print(f"  γ = {g:>9}: {100 * m['margin']:+6.2f}  ({m['words']})")
        if cmp["prior_gap"] is not None:
            print(f"prior − HTTY at γ = 0: {100 * cmp['prior_gap']:.2f} points (the prior is one network; "
                  f"{cmp['prior_gap_words']})")
        for name, d in cmp["seen_to_between_drop"].items():
            print(f"seen → between drop, {name}: {100 * d:.2f} points ({cmp['seen_to_between_words'][name]})")
    if slim is not None:
        print(f"\nagainst {SLIMMABLE} (one network trained on HTTY's budget, BN recalibrated per width; γ < 0: n/a, "
              "it cannot grow), points:")
        for name, gaps in results.versus_slimmable(summary, slim).items():
            print(f"  {name}: " + "; ".join(f"γ = {g} {d:+.2f} ({w})" for g, (d, w) in gaps.items()))
    else:
        print("\nno universally slimmable network in this run folder (notebook 04 trains it): the baseline a "
              "metamorphic network is read against")
    verdicts = results.versus_null(summary)
    if verdicts:
        print("\nagainst the null control (the prior with the metamorphic blocks removed, tail retrained):")
        for line in verdicts.values():
            print("  " + line)
    else:
        print("\nno null control in this run folder (notebook 03 with METHOD='null'): without it nothing here says "
              "whether the generated blocks carry function.")
    print("\ngenerated blocks at γ = 0 (α; branch scale ‖α·W2‖/‖W2*‖; relative error of conv2's kernel):")
    morph_dir = results.morph_folder(folder)
    for variant, record in runs.items():
        report = record.get("block_report")  # recorded by notebook 03; older runs: computed from their checkpoint
        path = morph_dir / variant / record.get("checkpoint", "metamorph.pt")  # recorded relative to its folder
        if report is None and path.is_file():
            report = diagnostics.block_report(metamorph.load(path)[0])
        if report is not None:
            print(f"  {variant}: " + "; ".join(f"{b} α {r['alpha']:.3f} scale {r['branch scale']:.3f} error "
                                                f"{r['error conv2.weight']:.2f}" for b, r in report.items()))
