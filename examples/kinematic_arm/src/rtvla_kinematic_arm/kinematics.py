"""Closed-form kinematics of the 5-joint arm on the holonomic base.

Joints: ``shoulder_yaw`` (about the vertical), then three pitch joints in the arm's vertical
plane — ``shoulder_pitch`` (upper arm, from vertical, positive leaning forward), ``elbow``
and ``wrist_pitch`` (each relative to the link before) — and ``wrist_roll`` about the hand's
axis. The grasp point is ``links_m[2]`` beyond the wrist pivot along the hand.

Inverse kinematics is geometric: shoulder yaw points the arm plane at the target, the wrist
pivot sits ``links_m[2]`` above the target (hand pointing straight down; slightly tilted
hands are tried when the straight one is out of reach), and the upper arm and forearm solve
the two-link triangle, elbow up. rtvla's skills call ``ik(target_xyz_world, q_seed,
base_pose)``; an unreachable target raises :class:`rtvla.errors.IKError`.

Usage::

    kin = ArmKinematics(shoulder=(0.12, 0, 0.4), links=(0.4, 0.35, 0.12), q_min=..., q_max=...)
    q = kin.ik((1.25, -0.2, 0.52), q_seed, base_pose=(0.72, 0.0, 0.0))
    kin.fk(q, (0.72, 0.0, 0.0))                  # -> (1.25, -0.2, 0.52)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rtvla.errors import IKError

__all__ = ["ArmKinematics"]

# Hand directions tried, as angles of the hand from straight down (radians, toward the robot first).
_TILTS = (0.0, -0.15, 0.15, -0.3, 0.3, -0.45, 0.45)


def _wrap_near(angle: float, ref: float, lo: float, hi: float) -> float:
    """``angle`` plus a multiple of 2 pi within [lo, hi], as close to ``ref`` as possible
    (``angle`` itself when no multiple fits: the limit check then reports it)."""
    fits = [angle + 2 * math.pi * k for k in (-2, -1, 0, 1, 2) if lo <= angle + 2 * math.pi * k <= hi]
    return min(fits, key=lambda a: abs(a - ref)) if fits else angle


class ArmKinematics:
    """FK/IK of the grasp point; see the module docstring. Thread-safe (no shared state)."""

    def __init__(self, *, shoulder: Sequence[float], links: Sequence[float], q_min: Sequence[float],
                 q_max: Sequence[float], base_pose_fn: Callable[[], np.ndarray] | None = None) -> None:
        self.shoulder = np.asarray(shoulder, dtype=float)
        self.l1, self.l2, self.l3 = (float(v) for v in links)
        self.q_min = np.asarray(q_min, dtype=float)
        self.q_max = np.asarray(q_max, dtype=float)
        self.dof = 5
        self._base_pose_fn = base_pose_fn

    def _base(self, base_pose: Any) -> np.ndarray:
        if base_pose is None:
            if self._base_pose_fn is None:
                raise ValueError("base_pose is required (no live robot to read it from)")
            base_pose = self._base_pose_fn()
        b = np.asarray(base_pose, dtype=float)
        if b.shape != (3,) or not np.all(np.isfinite(b)):
            raise ValueError(f"base_pose must be 3 finite values (x, y, yaw), got {b.tolist()}")
        return b

    def chain(self, q: Any, base_pose: Any = None) -> dict[str, np.ndarray]:
        """World positions of shoulder, elbow, wrist and grasp point, and the hand's rotation
        (columns: hand x, y, z; z points out of the hand towards the grasp point)."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.dof,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q must be {self.dof} finite joint values, got {q.tolist()}")
        bx, by, yaw = self._base(base_pose)
        c, s = math.cos(yaw), math.sin(yaw)
        sh = np.array((bx + c * self.shoulder[0] - s * self.shoulder[1],
                       by + s * self.shoulder[0] + c * self.shoulder[1], self.shoulder[2]))
        psi = yaw + q[0]
        u = np.array((math.cos(psi), math.sin(psi), 0.0))  # the arm plane's horizontal axis
        up = np.array((0.0, 0.0, 1.0))
        t1, t2, t3 = q[1], q[1] + q[2], q[1] + q[2] + q[3]
        elbow = sh + self.l1 * (math.sin(t1) * u + math.cos(t1) * up)
        wrist = elbow + self.l2 * (math.sin(t2) * u + math.cos(t2) * up)
        hz = math.sin(t3) * u + math.cos(t3) * up
        grasp = wrist + self.l3 * hz
        side = np.array((-u[1], u[0], 0.0))  # the pitch axis
        hx0 = np.cross(side, hz)
        cr, sr = math.cos(q[4]), math.sin(q[4])
        hx, hy = cr * hx0 + sr * side, -sr * hx0 + cr * side
        return {"shoulder": sh, "elbow": elbow, "wrist": wrist, "grasp": grasp,
                "hand_rot": np.column_stack((hx, hy, hz))}

    def fk(self, q: Any, base_pose: Any = None) -> np.ndarray:
        """World (x, y, z) of the grasp point."""
        return self.chain(q, base_pose)["grasp"]

    def fk_frame(self, q: Any, base_pose: Any = None) -> np.ndarray:
        """4x4 world transform of the grasp point (z axis out of the hand)."""
        ch = self.chain(q, base_pose)
        out = np.eye(4)
        out[:3, :3] = ch["hand_rot"]
        out[:3, 3] = ch["grasp"]
        return out

    def ik(self, target_xyz_world: Any, q_seed: Any, base_pose: Any = None, **_: Any) -> np.ndarray:
        """Joints putting the grasp point at ``target_xyz_world``, hand down, within limits.

        Raises :class:`IKError` saying how far out of reach the target is, or which joint
        limit every solution breaks.
        """
        target = np.asarray(target_xyz_world, dtype=float)
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise ValueError(f"IK target must be 3 finite values, got {target.tolist()}")
        seed = np.asarray(q_seed, dtype=float)
        if seed.shape != (self.dof,):
            raise ValueError(f"q_seed must have {self.dof} values, got {seed.tolist()}")
        b = self._base(base_pose)
        c, s = math.cos(b[2]), math.sin(b[2])
        sh_world = np.array((b[0] + c * self.shoulder[0] - s * self.shoulder[1],
                             b[1] + s * self.shoulder[0] + c * self.shoulder[1]))
        dx, dy = target[0] - sh_world[0], target[1] - sh_world[1]
        yaw0 = _wrap_near(math.atan2(-s * dx + c * dy, c * dx + s * dy), float(seed[0]),
                          float(self.q_min[0]), float(self.q_max[0]))
        r_t = math.hypot(dx, dy)
        z_t = target[2] - self.shoulder[2]
        reach_err, limit_err = math.inf, ""
        for tilt in _TILTS:
            theta3 = math.pi + tilt  # hand direction from vertical in the arm plane
            r_w = r_t - self.l3 * math.sin(theta3)
            z_w = z_t - self.l3 * math.cos(theta3)
            d = math.hypot(r_w, z_w)
            c2 = (d * d - self.l1 ** 2 - self.l2 ** 2) / (2 * self.l1 * self.l2)
            if abs(c2) > 1.0:
                reach_err = min(reach_err, d - (self.l1 + self.l2) if c2 > 0 else abs(self.l1 - self.l2) - d)
                continue
            q2 = math.acos(c2)  # elbow up: the forearm bends forward
            q1 = math.atan2(r_w, z_w) - math.atan2(self.l2 * math.sin(q2), self.l1 + self.l2 * math.cos(q2))
            q3 = theta3 - q1 - q2
            q = np.array((yaw0, q1, q2, q3, float(np.clip(seed[4], self.q_min[4], self.q_max[4]))))
            bad = np.flatnonzero((q < self.q_min - 1e-9) | (q > self.q_max + 1e-9))
            if bad.size:
                j = int(bad[0])
                limit_err = f"joint {j} = {q[j]:.3f} outside [{self.q_min[j]:.3f}, {self.q_max[j]:.3f}]"
                continue
            return q
        where = f"({target[0]:.3f}, {target[1]:.3f}, {target[2]:.3f}) from base ({b[0]:.2f}, {b[1]:.2f}, {b[2]:.2f})"
        if limit_err:
            raise IKError(f"IK for {where}: every solution breaks a limit ({limit_err})")
        raise IKError(f"IK: {where} is out of reach by {reach_err * 1e3:.0f} mm")
