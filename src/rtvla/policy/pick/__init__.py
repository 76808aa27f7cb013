"""The learned pick policy: demonstrations, behaviour cloning, the ONNX model, the skill.

* :mod:`~rtvla.policy.pick.episode`: seeded placements and lock-step pick episodes with
  rendered perception;
* :mod:`~rtvla.policy.pick.demos`: the scripted pick recorded into a documented npz;
* :mod:`~rtvla.policy.pick.model`: the MLP, its numpy forward pass, ONNX export and the
  onnxruntime wrapper :class:`OnnxPickModel`;
* :mod:`~rtvla.policy.pick.train`: numpy backprop + Adam, export and verification;
* :mod:`~rtvla.policy.pick.skill`: :class:`PolicyPick`, ``manipulate(pick ...)`` by policy
  through an action-chunk queue;
* :mod:`~rtvla.policy.pick.bench`: the ``bench pick`` rows (learned vs scripted).

Only the model side is imported here; the simulation-driven modules (``episode``, ``demos``,
``train``, ``skill``, ``bench``) use ``rtvla.action`` and are imported by name.

Reproduce the shipped ``rtvla/policy/models/pick.onnx``::

    nice -n 10 python scripts/make_pick_demos.py --seeds 0:1000 --jobs 2 --out pick_demos.npz
    nice -n 10 python scripts/train_pick_policy.py pick_demos.npz \\
        --out src/rtvla/policy/models/pick.onnx --seed 0
"""

from __future__ import annotations

from rtvla.policy.pick.model import (
    ACTION_DIM,
    INPUT_NAMES,
    MODEL_FORMAT,
    OnnxPickModel,
    PickNet,
    read_metadata,
)

__all__ = ["ACTION_DIM", "INPUT_NAMES", "MODEL_FORMAT", "OnnxPickModel", "PickNet", "read_metadata"]
