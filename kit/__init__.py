"""kit: a research kit for metamorphic neural networks (NeuMeta, paper 002; HTTY, paper 000).

Modules, one concept each:
  config    run configuration dataclasses, strict validation, `build` from a profile plus overrides
  profiles  the named profiles (smoke, quick, full, ablations, paper) as overrides of the dataclasses' defaults
  data      datasets in memory, on-device augmentation (Fashion-MNIST, CIFAR-10/100)
  models    CIFAR ResNets with per-block hidden widths, BatchNorm folding, cost counts
  train     the shared training loop and the prior trainer
  permute   weight smoothing by channel permutation (total variation, shortest Hamiltonian paths)
  inr       the weight INR: coordinates, Fourier features, kernel/bias decoding, noise, K-averaging
  mlpbank   the INR's engine: stacked residual MLPs in batched matmuls, with a hand-written backward
  metamorph metamorphic networks: γ ↔ widths and cost, generation through functional_call, export
  metatrain metamorphic training (HTTY, NeuMeta, the kit's recipes) as a task on the shared loop; evaluation across γ
  plots     figures used by the notebooks
  pipeline  runs the numbered notebooks headlessly with papermill
  stamps    skip-if-complete stamps, staging and the journalled promote of a notebook's run folder
  overrides --set / -p: which notebook a config section or parameter reaches, checked before any work
  lock      one writer per run folder (an flock that dies with its process)
  baselines individually trained networks and structured pruning (notebook 04); prune: the criteria
  results   notebook 03's records grouped over seeds; records: their validation; spread: the seed-spread rule
  report    the paper's tables and report.md from a run folder; figures: its figures
  prefit    the kit's pre-fit recipe: each block's INR fitted to the prior's kernels before training
  blockwise block-wise width distillation: every generated block at several widths against the prior block's output
  widthstudy the width study's tables and figures (per-block output error per width, per phase, over steps)
  study     notebook 07's analyses of why generated blocks switch off
  explorer  the γ explorer's model (any γ, K, method); widgets: its live panel
  bounds    the sizes a config or a file may ask for (network, INR, K), checked before anything is allocated
  cli       `python -m kit …`;  errors  KitError, the one-sentence refusal
  bench     benchmarks, a package with one module each (`python -m kit bench prior | permute | inr | …`)
  io        atomic checkpoints and JSON records;  runtime  device, seeds, provenance
Importing kit never imports torchvision.
"""
__version__ = "0.1.0"
