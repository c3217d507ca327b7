"""What every row is called where people read it: tables, figures, report.md, `kit summary` and the γ explorer.

A row key is a notebook-03 run's label (`kit.results.label`: method, then ' − <ablation>' for an ablation row) or a
notebook-04 family ('individual', 'slimmable'); its display name is written here once.
"""
from __future__ import annotations

ROW_NAMES = {"individual": "Individual", "slimmable": "Universally slimmable network (US-Nets)", "neumeta": "NeuMeta",
             "htty": "HTTY (paper 000)",
             "htty − incremental": "HTTY without incremental training", "htty − alpha": "HTTY without α-scaling",
             "htty − accumulation": "HTTY without gradient accumulation",
             "htty − init": "HTTY without INR initialisation", "htty − disentangle": "HTTY without disentanglement",
             "null": "Null control (blocks removed, tail retrained)", "prefit": "Pre-fit recipe (kit)",
             "prefit − prefit": "Pre-fit recipe without the pre-fit",
             "prefit − sizes": "Pre-fit recipe with the paper's size features",
             "prefit − width-updates": "Pre-fit recipe, every width updating every weight",
             "prefit − distill": "Pre-fit recipe with cross-entropy instead of distillation",
             "prefit − alpha-init": "Pre-fit recipe with α starting at 0",
             "prefit − relative": "Pre-fit recipe with the weighted reconstruction",
             "prefit − frozen-tail": "Pre-fit recipe with the tail trained",
             "blockwise": "Block-wise recipe (kit)", "blockwise − prefit": "Block-wise recipe without the pre-fit",
             "blockwise − blockwise": "Block-wise recipe without the width distillation",
             "blockwise − end-to-end": "Block-wise recipe without the end-to-end phase",
             "blockwise − per-block": "Block-wise recipe, one γ for every block",
             "blockwise − sandwich": "Block-wise recipe without the sandwich rule",
             "blockwise − warmup": "Block-wise recipe, distillation without warm-up"}
CRITERION_NAMES = {"random": "random", "l1": "L1", "l2": "L2", "taylor": "Taylor", "hessian": "Hessian"}  # pruning rows


def display_name(key: str) -> str:
    """'HTTY without α-scaling' for 'htty − alpha'; other labels with the method capitalised."""
    return ROW_NAMES.get(key) or key.replace("htty", "HTTY").replace("neumeta", "NeuMeta")
