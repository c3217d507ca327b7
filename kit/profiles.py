"""The named profiles: how big a run is, as overrides of the config dataclasses' defaults (`kit.config`).

`PROFILES` maps a profile's name to {config SECTION: nested overrides}; `kit.config.build` applies one.
  smoke  seconds on a CPU; what the tests and the notebook smoke runs use
  quick  the default main job (`make run`): the whole pipeline (01 → 07) in about 25 minutes on 2 CPU cores
  full   quick at three seeds: every prior-dependent row with its seed spread, within an hour on 2 CPU cores
  ablations  quick plus the ablation rows, the block-count sweep and HTTY ×3 epochs, one seed
  paper  the papers' CIFAR-100 ResNet-56 settings (HTTY paper 000 sec. 4.1), for a GPU
"""
from __future__ import annotations

import copy

# quick (and so full and ablations) metamorphose the last three non-projection blocks of ResNet-20 before its final one (the
# multi-block setting; `all` reaches back to layer1 and costs twice as much per step on a CPU). They train for
# far fewer steps than the paper's 50 epochs per stage, so α and the tail get larger learning rates: Adam moves
# a parameter by about lr per step, and α must be able to travel from 0 to O(1) within a stage.
_CPU_MORPH = {"setting": "layer2.1,layer2.2,layer3.1", "inr": {"hidden": 128, "depth": 4}, "train_images": 12800,
              "val_images": 2000, "select_gammas": [0.0, 0.5], "alpha_lr": 1e-2, "tail_lr": 1e-3,
              "optim": {"epochs": 2, "lr": 1e-3, "warmup_epochs": 0.5}}

# The block-wise recipe's phases on 2 CPU cores (a method's section 'morph.<method>' sizes its phases, over its
# switches and under its ablations): a 1,000-step pre-fit per block, 150 distillation steps on 64 cached inputs
# each (the three blocks' convolutions cost as much as the INR's generation at 128), 3 epochs end to end.
_CPU_BLOCKWISE = {"prefit_steps": 1000, "joint_epochs": 3, "blockwise": {"steps": 150, "batch_size": 64}}

# quick fits the whole pipeline (01 → 07) in 25 minutes on 2 cores: its prior and the individually trained
# baselines see a class-balanced 30,000 of the training images (90.3% test accuracy; 20,000 gave 88.8%), every
# notebook tests on a class-balanced 5,000 of the 10,000 test images (standard error ≈ 0.4 points at 90%), and
# one γ is trained individually.
_QUICK = {
    "prior": {"data": {"train_limit": 30000, "test_limit": 5000, "eval_batch_size": 128},
              "model": {"depth": 20, "width": 16},
              "optim": {"epochs": 4}},
    "morph": {**_CPU_MORPH, "k_samples": 5},
    "morph.blockwise": _CPU_BLOCKWISE,
    "baseline": {"setting": _CPU_MORPH["setting"], "individual_gammas": [0.5],
                 "prune_gammas": [0.125, 0.25, 0.5, 0.75],
                 # pruning + fine-tuning at the block-wise recipe's training budget: one epoch over the same 12,800
                 # training images (100 SGD steps of 128) per width, for the Hessian criterion (the best without
                 # fine-tuning on this prior); the recipe's end-to-end phase alone passes 3 epochs × 3 widths of them
                 "finetune_epochs": 1, "finetune_images": _CPU_MORPH["train_images"], "finetune_criteria": ["hessian"],
                 # the universally slimmable network on HTTY's budget: 3 stages × 2 epochs over the same 12,800 images,
                 # 4 widths per step (one batch each, as HTTY's accumulation of 4 configurations): 150 steps
                 "slimmable": {"train_images": _CPU_MORPH["train_images"], "val_images": _CPU_MORPH["val_images"],
                               "optim": {"epochs": 6}}},
}

# full is quick at three seeds (kit.pipeline.SEEDS): the null control, HTTY, NeuMeta, the block-wise recipe, the
# individually trained networks and pruning each over seeds 0, 1, 2 on the one prior; its seed 0 rows are quick's.
# ablations is quick with the pre-fit recipe, paper 000 Table 1's ablation rows, the kit recipes' own, NeuMeta's
# block-count sweep (Fig. 4) and HTTY at 3× the epochs (Fig. 6), one seed (21 notebook-03 runs more than quick).
# Section 'morph.<method>' sizes one method's phases (kit.config.MorphConfig.preset).

# Each profile maps a config SECTION to nested overrides of the dataclass defaults.
PROFILES: dict[str, dict[str, dict]] = {
    "smoke": {
        "prior": {
            "data": {"val_size": 200, "train_limit": 1000, "test_limit": 500, "batch_size": 32, "eval_batch_size": 500},
            "model": {"depth": 8, "width": 8},
            "optim": {"epochs": 3, "lr": 0.1, "warmup_epochs": 0.5},
            "runtime": {"progress": False},
        },
        "morph": {  # two blocks of ResNet-8 (its other blocks are projection blocks and the final block)
            "setting": "layer1.0,layer2.0", "inr": {"hidden": 32, "depth": 2, "num_freqs": 4}, "pool_size": 5,
            "batch_size": 32, "k_samples": 2, "k_select": 2, "select_gammas": [0.0, 0.5], "alpha_lr": 1e-2,
            "tail_lr": 1e-3, "gammas_eval": [-0.25, 0.0, 0.25, 0.3125, 0.5, 0.75], "prefit_steps": 200,
            "blockwise": {"images": 256, "probe_images": 64, "batch_size": 32, "probe_every": 20,
                          "checkpoint_every": 20},
            "optim": {"epochs": 1, "lr": 3e-3, "warmup_epochs": 0.2}, "runtime": {"progress": False},
        },
        "morph.blockwise": {"joint_epochs": 1, "blockwise": {"steps": 40, "warmup_steps": 5}},
        "baseline": {"setting": "layer1.0,layer2.0", "individual_gammas": [0.5], "prune_gammas": [0.25, 0.5],
                     "calibration_images": 64, "finetune_epochs": 1, "finetune_images": 256,
                     "slimmable": {"train_images": 256, "batch_size": 32, "calibration_images": 64,
                                   "gammas": [0.0, 0.25, 0.3125, 0.5, 0.75],
                                   "optim": {"epochs": 1, "warmup_epochs": 0.2}},
                     "runtime": {"progress": False}},
        "explorer": {"eval_images": 200, "k_max": 4, "record_gammas": [-0.25, 0.0, 0.5]},
    },
    "quick": copy.deepcopy(_QUICK),
    "full": copy.deepcopy(_QUICK),
    "ablations": copy.deepcopy(_QUICK),
    "paper": {  # the standard CIFAR ResNet recipe (He et al.) for a CIFAR-100 ResNet-56 prior
        "prior": {
            "data": {"name": "cifar100", "crop_padding": 4},
            "model": {"depth": 56, "width": 16},
            "optim": {"epochs": 200, "lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 1.0},
        },
        # paper 000 sec. 4.1: layer3 blocks 1…7, INR 8×512 ELU, 50 epochs per stage after 20 of warm-up, K = 100
        # (its positional frequency 32 is beyond float32 resolution; 16 is the most that carries information)
        "morph": {"setting": "last_stage", "inr": {"hidden": 512, "depth": 8, "num_freqs": 16}, "k_samples": 100},
        "baseline": {"setting": "last_stage", "individual_gammas": [0.125, 0.25, 0.265625, 0.375, 0.5, 0.625, 0.75],
                     "prune_gammas": [0.0, 0.125, 0.25, 0.265625, 0.375, 0.5, 0.625, 0.75],
                     "slimmable": {"optim": {"epochs": 350}}},  # HTTY's budget: 7 stages × 50 epochs
        "explorer": {"eval_images": 1000, "k_max": 20},  # a GPU evaluates 1,000 CIFAR images well within a second
    },
}
