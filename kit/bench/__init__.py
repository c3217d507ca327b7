"""Benchmarks: speed targets are measured here, side by side in one run, never by timed tests.

One module per benchmark, each run as `python -m kit bench <name>`:
  prior     training throughput of the kit's loop against a bare PyTorch loop
  permute   weight smoothing of ResNet-56: the kit's deterministic search against fast-tsp (0.1 s per group)
  inr       the INR generating a ResNet-56 last stage: kit against a per-tensor loop and NeuMeta-style code
  htty      one HTTY step (4 configurations) against 4 plain prior steps, and the INR's share
  prefit    the pre-fit recipe: pre-fit per block, one step against an HTTY step, time to acceptance
  blockwise the block-wise recipe: seconds per phase, a distillation step against an end-to-end step, its acceptance
  limits    what limits the block-wise recipe: free blocks of the same width, more steps, regression, pre-fit precision
  explorer  the γ explorer's update latency on a metamorph.pt
  timing    shared: seconds of a call (device synchronised) and medians over alternating rounds
Importing this package imports none of them (nor torch).
"""
