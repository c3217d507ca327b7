"""kit: a research kit for metamorphic neural networks (NeuMeta, paper 002; HTTY, paper 000).

Modules, one concept each:
  config    run configuration dataclasses, strict validation, `build` from a profile plus overrides
  profiles  the named profiles (smoke, quick, full, paper) as overrides of the dataclasses' defaults
  data      datasets in memory, on-device augmentation (Fashion-MNIST, CIFAR-10/100)
  models    CIFAR ResNets with per-block hidden widths, BatchNorm folding, cost counts
  train     the shared training loop and the prior trainer
  permute   weight smoothing by channel permutation (total variation, shortest Hamiltonian paths)
  inr       the weight INR: coordinates, Fourier features, kernel/bias decoding, noise, K-averaging
  mlpbank   the INR's engine: stacked residual MLPs in batched matmuls, with a hand-written backward
  metamorph metamorphic networks: γ ↔ widths and cost, generation through functional_call, export
  metatrain metamorphic training (NeuMeta) as a task on the shared loop; evaluation across γ
  plots     figures used by the notebooks
  pipeline  runs the numbered notebooks headlessly with papermill
  bench     benchmarks, a package with one module each (`python -m kit bench prior | permute | inr | …`)
  io        atomic checkpoints and JSON records;  runtime  device, seeds, provenance
Importing kit never imports torchvision.
"""
__version__ = "0.1.0"
