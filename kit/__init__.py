"""kit: a research kit for metamorphic neural networks (HTTY, paper 000, on NeuMeta, paper 002).

Modules, one concept each, grouped by what they are for:

The networks and their INR
  models      CIFAR ResNets with per-block hidden widths, BatchNorm folding, cost counts
  inr         the weight INR: coordinates, Fourier features, kernel/bias decoding, noise, K-averaging
  mlpbank     the INR's engine: stacked residual MLPs in batched matmuls, with a hand-written backward
  metamorph   metamorphic networks: γ ↔ widths and cost, the INR's slots per block, generation, export
  slimmable   a universally slimmable network on the same blocks (US-Nets), the competitor of notebook 04
  bounds      the sizes a config or a file may ask for (network, INR, K), checked before anything is allocated
Data
  datasets    the dataset files on disk (Fashion-MNIST IDX, CIFAR archives) read into uint8 splits
  data        datasets held in memory, on-device augmentation, class-balanced subsets, the prior's dataset
Training and the methods
  train       the one training loop every trainer shares, and the prior trainer
  permute     weight smoothing by channel permutation (total variation), and the smoothed prior's file
  paths       the shortest open Hamiltonian path search that orders each channel group
  metatrain   a metamorphic training run (HTTY, NeuMeta, the null control, the kit's recipes), stage by stage
  morphtask   its task on the loop: one configuration's loss (γ draws, reconstruction, distillation), the EMA
  prefit      the pre-fit: each block's INR fitted to the prior's tensors before training
  blockwise   block-wise width distillation: every generated block at several widths against the prior block
  prune       structured pruning of the blocks' hidden channels by five criteria, and their cached scores
  baselines   notebook 04's rows: individually trained, pruned, slimmable networks
  diagnostics whether generated blocks carry function: relative errors, the block report, its sentences
Reading results back
  results     notebook 03's records grouped over seeds; records: their validation; spread: the seed-spread rule
  names       what every row is called in tables, figures, report.md and the explorer
  report      the paper's tables and report.md from a run folder; figures: its figures; plots: every figure
  widthstudy  the width study's tables and figures (per-block output error per width, per phase, over steps)
  study       notebook 07's analyses of why generated blocks switch off
  explorer    the γ explorer's model (any γ, K, method); widgets: its live panel
Running
  config      run configuration dataclasses, strict validation, `build` from a profile plus overrides
  profiles    the named profiles (smoke, quick, full, ablations, paper) as overrides of the dataclasses' defaults
  pipeline    runs the numbered notebooks headlessly with papermill; stamps: skip-if-complete stamps and the
              journalled promote of a notebook's run folder; lock: one writer per run folder
  overrides   --set / -p: which notebook a config section or parameter reaches, checked before any work
  cli         `python -m kit …`; arguments: its typed values; terminal: output into closed pipes
  bench       benchmarks, a package with one module each (`python -m kit bench prior | permute | inr | …`)
  io          atomic checkpoints and JSON records; runtime: device, seeds, provenance; errors: KitError, the
              one-sentence refusal
Importing kit never imports torchvision.
"""
__version__ = "0.1.0"
