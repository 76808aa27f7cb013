#!/usr/bin/env python
"""Train the learned pick policy on recorded demonstrations and export it to ONNX.

    nice -n 10 python scripts/train_pick_policy.py pick_demos.npz \
        --out src/rtvla/policy/models/pick.onnx --seed 0

See :mod:`rtvla.policy.pick.train` for the network and the training recipe.
"""

from __future__ import annotations

import sys

from rtvla.policy.pick.train import main

if __name__ == "__main__":
    sys.exit(main())
