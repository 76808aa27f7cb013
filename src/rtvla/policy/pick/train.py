"""Behaviour cloning of the scripted pick: a numpy MLP trained with Adam, exported to ONNX.

No deep-learning framework is needed: the network is small (12 inputs, two hidden layers of
256, H x 6 outputs) and the forward and backward passes are written out here. Training
samples are the 10 Hz samples of the successful demonstrations
(:mod:`rtvla.policy.pick.demos`); the label of a sample is the next H actions of its episode.
The network predicts arm targets as offsets from the current joint positions (the graph adds
them back), so its precision does not depend on where the arm is. Inputs are augmented with
small noise on the joint positions (the labels stay the demonstrated absolute targets, so
the policy learns to steer back onto the demonstrated path) and on the perceived target.

Reproduce the shipped model::

    nice -n 10 python scripts/make_pick_demos.py --seeds 0:1000 --jobs 2 --out pick_demos.npz
    nice -n 10 python scripts/train_pick_policy.py pick_demos.npz \\
        --out src/rtvla/policy/models/pick.onnx --seed 0

The written model is checked before the command returns: onnxruntime's actions must equal
the numpy forward pass on held-out samples.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvla.errors import ConfigError
from rtvla.policy.pick.demos import RATE_HZ, DemoSet, action_chunks, load_demos
from rtvla.policy.pick.episode import CARRY_Q
from rtvla.policy.pick.model import ACTION_DIM, INPUT_NAMES, OnnxPickModel, PickNet
from rtvla.robots.sim.scene import load_scene

__all__ = ["TrainSettings", "main", "train_pick_net", "verify_onnx"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters (the defaults made the shipped model)."""

    horizon: int = 10
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 300
    batch: int = 256
    lr: float = 1e-3
    lr_final: float = 1e-5
    weight_decay: float = 0.0
    q_noise_rad: float = 0.02
    target_noise_m: float = 0.005
    gripper_weight: float = 2.0
    val_fraction: float = 0.1
    seed: int = 0
    arm_actions: str = "act_goal"  # or "act_q": the control loop's trajectory instead of goals

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.epochs < 1 or self.batch < 1 or not self.hidden:
            raise ConfigError(f"horizon, epochs, batch must be >= 1 and hidden non-empty, got {self}")
        if not (self.lr > 0 and 0 < self.lr_final <= self.lr):
            raise ConfigError(f"need 0 < lr_final <= lr, got lr={self.lr} lr_final={self.lr_final}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def _dataset(demos: DemoSet, horizon: int, arm: str = "act_goal") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs [N, 12], arm targets [N, H, 5], gripper [N, H], episode [N]) of successful episodes."""
    ok = demos["ep_success"][demos["episode"]]
    if not ok.any():
        raise ConfigError("the demonstrations hold no successful episode to learn from")
    x = np.concatenate([demos["obs_q"], demos["obs_gripper"][:, None], demos["obs_target_base"],
                        demos["obs_onehot"]], axis=1).astype(np.float32)
    aq, ag = action_chunks(demos, horizon, arm)
    return x[ok], aq[ok].astype(np.float32), ag[ok].astype(np.float32), demos["episode"][ok]


def _targets(x: np.ndarray, aq: np.ndarray, ag: np.ndarray, dof: int) -> np.ndarray:
    """Flattened labels [N, H*A]: arm targets as offsets from the (possibly noisy) joint
    positions in ``x``, gripper commands as they are."""
    y = np.concatenate([aq - x[:, None, :dof], ag[:, :, None]], axis=2)
    return y.reshape(len(x), -1)


class _Adam:
    def __init__(self, params: list[np.ndarray], lr: float, wd: float) -> None:
        self.params, self.lr, self.wd = params, lr, wd
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if self.wd and p.ndim == 2:
                g = g + self.wd * p
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (self.lr * (m / c1) / (np.sqrt(v / c2) + eps)).astype(p.dtype)


def _loss_and_grads(net: PickNet, x: np.ndarray, y_n: np.ndarray, w: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """Weighted MSE in normalised output units and its gradients (W0, b0, W1, b1, ...)."""
    acts = [((x - net.in_mean) / net.in_std).astype(np.float32)]
    pre = []
    for i, (wt, b) in enumerate(net.layers):
        z = acts[-1] @ wt + b
        pre.append(z)
        acts.append(np.maximum(z, 0.0) if i < len(net.layers) - 1 else z)
    err = acts[-1] - y_n
    loss = float(np.mean(w * err * err))
    d = (2.0 / err.size) * w * err
    grads: list[np.ndarray] = []
    for i in range(len(net.layers) - 1, -1, -1):
        wt, _ = net.layers[i]
        grads = [acts[i].T @ d, d.sum(axis=0), *grads]
        if i:
            d = (d @ wt.T) * (pre[i - 1] > 0)
    return loss, [g.astype(np.float32) for g in grads]


def train_pick_net(
    demos: DemoSet,
    settings: TrainSettings | None = None,
    *,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> tuple[PickNet, dict[str, Any]]:
    """Train the pick MLP on ``demos``; returns the network and a report (losses, errors in
    radians on held-out episodes). ``progress(epoch, epochs, train_loss, val_loss)``."""
    s = settings or TrainSettings()
    rng = np.random.default_rng(s.seed)
    x, aq, ag, ep = _dataset(demos, s.horizon, s.arm_actions)
    dof = aq.shape[2]
    episodes = np.unique(ep)
    n_val = int(round(s.val_fraction * len(episodes)))
    val_eps = rng.choice(episodes, size=n_val, replace=False) if n_val else np.array([], dtype=ep.dtype)
    is_val = np.isin(ep, val_eps)
    xt, aqt, agt = x[~is_val], aq[~is_val], ag[~is_val]
    y_clean = _targets(xt, aqt, agt, dof)

    in_mean = xt.mean(axis=0)
    in_std = np.maximum(xt.std(axis=0), 1e-2).astype(np.float32)
    onehot = slice(dof + 4, None)
    in_mean[onehot], in_std[onehot] = 0.5, 0.5  # a one-hot maps to -1 / +1, whatever the mix
    out_mean = y_clean.mean(axis=0).astype(np.float32)
    out_std = np.maximum(y_clean.std(axis=0), 1e-3).astype(np.float32)
    w_cols = np.ones(s.horizon * ACTION_DIM, dtype=np.float32)
    w_cols[ACTION_DIM - 1 :: ACTION_DIM] = s.gripper_weight

    sizes = [x.shape[1], *s.hidden, s.horizon * ACTION_DIM]
    layers = []
    for a, b in itertools.pairwise(sizes):
        layers.append(((rng.standard_normal((a, b)) * math.sqrt(2.0 / a)).astype(np.float32),
                       np.zeros(b, dtype=np.float32)))
    names = sorted(str(n) for n in demos.object_names)
    scene_limits = _joint_limits()
    net = PickNet(layers=layers, in_mean=in_mean.astype(np.float32), in_std=in_std,
                  out_mean=out_mean, out_std=out_std, horizon=s.horizon,
                  q_min=scene_limits[0], q_max=scene_limits[1], rate_hz=float(demos["rate_hz"]),
                  joint_names=[str(j) for j in demos["arm_joints"]], object_names=names,
                  carry_q=list(CARRY_Q))
    params = [p for layer in net.layers for p in layer]
    opt = _Adam(params, s.lr, s.weight_decay)
    n = len(xt)
    steps_per_epoch = max(1, n // s.batch)
    total = s.epochs * steps_per_epoch
    noise = np.zeros(x.shape[1], dtype=np.float32)
    noise[:dof] = s.q_noise_rad
    noise[dof + 1 : dof + 4] = s.target_noise_m
    history = []
    step = 0
    val_loss = float("nan")
    for epoch in range(s.epochs):
        order = rng.permutation(n)
        losses = []
        for k in range(steps_per_epoch):
            idx = order[k * s.batch : (k + 1) * s.batch]
            xb = xt[idx] + (rng.standard_normal((len(idx), x.shape[1])) * noise).astype(np.float32)
            yb = (_targets(xb, aqt[idx], agt[idx], dof) - out_mean) / out_std
            opt.lr = s.lr_final + 0.5 * (s.lr - s.lr_final) * (1 + math.cos(math.pi * step / total))
            loss, grads = _loss_and_grads(net, xb, yb.astype(np.float32), w_cols)
            opt.step(grads)
            losses.append(loss)
            step += 1
        if is_val.any() and (epoch % 10 == 9 or epoch == s.epochs - 1):
            yv = (_targets(x[is_val], aq[is_val], ag[is_val], dof) - out_mean) / out_std
            pv = net.hidden(x[is_val])
            val_loss = float(np.mean(w_cols * (pv - yv) ** 2))
        history.append(float(np.mean(losses)))
        if progress is not None:
            progress(epoch + 1, s.epochs, history[-1], val_loss)
    report: dict[str, Any] = {"settings": {k: getattr(s, k) for k in s.__dataclass_fields__},
                              "train_samples": int(n), "val_samples": int(is_val.sum()),
                              "train_episodes": int(len(episodes) - n_val), "val_episodes": int(n_val),
                              "final_train_loss": history[-1], "final_val_loss": val_loss}
    if is_val.any():
        pred = net.forward_rows(x[is_val])
        arm_err = np.abs(pred[:, :, :dof] - aq[is_val])
        grip_err = np.abs((pred[:, :, dof] > 0.5).astype(np.float32) - ag[is_val])
        report["val_arm_error_rad"] = {"mean": float(arm_err.mean()), "p99": float(np.percentile(arm_err, 99)),
                                       "first_step_mean": float(arm_err[:, 0].mean())}
        report["val_gripper_mismatch"] = float(grip_err.mean())
    return net, report


def _joint_limits() -> tuple[np.ndarray, np.ndarray]:
    """The simulated arm's joint ranges (the graph clips its targets to them)."""
    import mujoco  # after rtvla.robots.sim (imported through episode) chose the GL backend

    scene = load_scene()
    model = scene.load_model()
    rng = [model.jnt_range[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)]
           for j in scene.robot.arm_joints]
    arr = np.asarray(rng, dtype=np.float32)
    return arr[:, 0].copy(), arr[:, 1].copy()


def verify_onnx(net: PickNet, path: str | Path, x: np.ndarray, *, atol: float = 1e-4) -> float:
    """Largest difference between onnxruntime on ``path`` and ``net``'s numpy forward pass
    over input rows ``x``; raises ConfigError above ``atol``."""
    model = OnnxPickModel(path)
    dims = np.cumsum([0, *net.input_dims])
    feeds = {name: x[:, dims[i] : dims[i + 1]] for i, name in enumerate(INPUT_NAMES)}
    ort_out = model.infer(feeds)["actions"]
    np_out = net.forward_rows(x)
    diff = float(np.max(np.abs(ort_out - np_out)))
    if not diff <= atol:
        raise ConfigError(f"{path}: onnxruntime differs from the numpy forward pass by {diff:.2e} > {atol}")
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rtvla.policy.pick.train DEMOS.npz --out pick.onnx [--seed 0] [--json PATH]``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    ap = argparse.ArgumentParser(prog="train_pick_policy", description=__doc__.splitlines()[0])
    ap.add_argument("demos", help="demonstration npz from make_pick_demos")
    ap.add_argument("--out", required=True, help="ONNX file to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    ap.add_argument("--horizon", type=int, default=TrainSettings.horizon)
    ap.add_argument("--arm-actions", choices=("act_goal", "act_q"), default=TrainSettings.arm_actions,
                    help="learn the skill's joint goals (default) or the control loop's trajectory")
    ap.add_argument("--json", default=None, help="also write the training report as JSON to PATH")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    try:
        demos = load_demos(args.demos)
        settings = TrainSettings(seed=args.seed, epochs=args.epochs, horizon=args.horizon,
                                 arm_actions=args.arm_actions)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f} val {task.fields[val]:.4f}"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=settings.epochs, loss=float("nan"), val=float("nan"))
        net, report = train_pick_net(demos, settings, progress=lambda e, n, lt, lv: bar.update(
            task, completed=e, loss=lt, val=lv))
    net.extra["training"] = json.dumps({"demos_episodes": demos.episodes, "seed": args.seed,
                                        "epochs": settings.epochs, "rate_hz": RATE_HZ,
                                        "arm_actions": settings.arm_actions})
    path = net.save_onnx(args.out)
    x, _, _, _ = _dataset(demos, settings.horizon, settings.arm_actions)
    report["onnx_max_abs_diff"] = verify_onnx(net, path, x[:: max(1, len(x) // 512)])
    report["file"] = str(path)
    report["bytes"] = path.stat().st_size
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
