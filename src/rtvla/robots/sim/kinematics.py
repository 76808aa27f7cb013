"""Forward and inverse kinematics of the simulated arm's grasp site, for the task executor.

Works on a private ``MjData`` (never the live one), so it can run in any thread while the
physics thread steps. Inverse kinematics is damped least squares on MuJoCo's site
Jacobian (``mj_jacSite``) over the arm joints only, clamped to the joint limits, with a
soft preference for a top-down gripper (the hand's z axis pointing at the floor).

Usage::

    kin = robot.kinematics
    q = kin.ik([1.8, -0.7, 0.55], robot.read_state().q)     # base pose: the robot's current one
    kin.fk(q, base_pose=(1.3, -0.5, 0.0))                   # -> array([1.8, -0.7, 0.55])
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import mujoco  # MUJOCO_GL was set by rtvla.robots.sim.__init__ (imports _gl first)
import numpy as np

from rtvla.errors import ConfigError, IKError

__all__ = ["SimKinematics"]

_DOWN = np.array([0.0, 0.0, -1.0])


class SimKinematics:
    """FK/IK of ``site`` over ``arm_joints`` with the base at a given (x, y, yaw).

    ``base_pose_fn`` supplies the base pose when a call passes none (``SimRobot`` passes its
    live pose). Thread-safe: calls serialise on a private lock.
    """

    def __init__(
        self,
        model: Any,
        *,
        arm_joints: Sequence[str],
        base_joints: Sequence[str],
        site: str,
        base_pose_fn: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self.model = model
        self._data = mujoco.MjData(model)
        self._lock = threading.Lock()
        self._base_pose_fn = base_pose_fn

        def jid(name: str) -> int:
            j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if j < 0:
                raise ConfigError(f"kinematics: joint {name!r} not in the model")
            return j

        arm = [jid(n) for n in arm_joints]
        self._qadr = np.array([model.jnt_qposadr[j] for j in arm])
        self._vadr = np.array([model.jnt_dofadr[j] for j in arm])
        self.q_min = np.array([model.jnt_range[j][0] for j in arm])
        self.q_max = np.array([model.jnt_range[j][1] for j in arm])
        self._base_qadr = np.array([model.jnt_qposadr[jid(n)] for n in base_joints])
        self._site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if self._site < 0:
            raise ConfigError(f"kinematics: site {site!r} not in the model")
        self.dof = len(arm)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    # ------------------------------------------------------------------ helpers
    def _base(self, base_pose: Any) -> np.ndarray:
        if base_pose is None:
            if self._base_pose_fn is None:
                raise ValueError("base_pose is required (no live robot to read it from)")
            base_pose = self._base_pose_fn()
        b = np.asarray(base_pose, dtype=float)
        if b.shape != (3,) or not np.all(np.isfinite(b)):
            raise ValueError(f"base_pose must be 3 finite values (x, y, yaw), got {b.tolist()}")
        return b

    def _q(self, q: Any) -> np.ndarray:
        arr = np.asarray(q, dtype=float)
        if arr.shape != (self.dof,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"q must be {self.dof} finite joint values, got {arr.tolist()}")
        return arr

    def _pose(self, q: np.ndarray) -> None:
        """Set the private data to ``q`` (base already set) and run kinematics. Lock held."""
        d = self._data
        d.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)

    # ------------------------------------------------------------------ public
    def fk(self, q: Any, base_pose: Any = None) -> np.ndarray:
        """World (x, y, z) of the grasp site for arm joints ``q`` and base ``base_pose``."""
        qv, b = self._q(q), self._base(base_pose)
        with self._lock:
            self._data.qpos[self._base_qadr] = b
            self._pose(qv)
            return self._data.site_xpos[self._site].copy()

    def fk_frame(self, q: Any, base_pose: Any = None) -> np.ndarray:
        """4x4 world transform of the grasp site (z axis points out of the hand)."""
        qv, b = self._q(q), self._base(base_pose)
        with self._lock:
            self._data.qpos[self._base_qadr] = b
            self._pose(qv)
            out = np.eye(4)
            out[:3, :3] = self._data.site_xmat[self._site].reshape(3, 3)
            out[:3, 3] = self._data.site_xpos[self._site]
            return out

    def ik(
        self,
        target_xyz_world: Any,
        q_seed: Any,
        base_pose: Any = None,
        *,
        top_down: bool = True,
        tol_m: float = 1e-3,
        max_iters: int = 300,
        damping: float = 0.02,
    ) -> np.ndarray:
        """Arm joints that put the grasp site at ``target_xyz_world``, within the joint limits.

        Starts from ``q_seed`` and, if that does not converge, from a few canonical seeds
        aimed at the target. ``top_down`` weighs in the gripper pointing straight down
        (a preference; the position is what must converge). Raises :class:`IKError` with the
        smallest position residual found when no seed reaches ``tol_m``.
        """
        target = np.asarray(target_xyz_world, dtype=float)
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise ValueError(f"IK target must be 3 finite values, got {target.tolist()}")
        seed, b = self._q(q_seed), self._base(base_pose)
        best_q, best_err = seed, math.inf
        with self._lock:
            self._data.qpos[self._base_qadr] = b
            for s in self._seeds(seed, target, b):
                q, err = self._solve(target, s, top_down, tol_m, max_iters, damping)
                if err < best_err:
                    best_q, best_err = q, err
                if err <= tol_m:
                    return q
        exc = IKError(
            f"IK did not reach ({target[0]:.3f}, {target[1]:.3f}, {target[2]:.3f}) from base "
            f"({b[0]:.2f}, {b[1]:.2f}, {b[2]:.2f}): residual {best_err * 1e3:.1f} mm > {tol_m * 1e3:.1f} mm"
        )
        exc.residual = best_err  # type: ignore[attr-defined]
        exc.best_q = best_q  # type: ignore[attr-defined]
        raise exc

    def _seeds(self, seed: np.ndarray, target: np.ndarray, base: np.ndarray) -> list[np.ndarray]:
        """The caller's seed first, then elbow-bent poses with the shoulder turned to the target."""
        c, s = math.cos(base[2]), math.sin(base[2])
        dx, dy = target[0] - base[0], target[1] - base[1]
        heading = math.atan2(-s * dx + c * dy, c * dx + s * dy)  # target bearing in the base frame
        seeds = [seed]
        for pitch, elbow in ((0.6, 1.4), (0.2, 2.0), (1.1, 0.7)):
            q = np.zeros(self.dof)
            q[0] = heading
            q[1:3] = (pitch, elbow)
            if self.dof > 3:
                q[3] = math.pi - pitch - elbow
            seeds.append(np.clip(q, self.q_min, self.q_max))
        return seeds

    def _solve(
        self, target: np.ndarray, q0: np.ndarray, top_down: bool, tol: float, iters: int, lam: float
    ) -> tuple[np.ndarray, float]:
        d = self._data
        q = np.clip(q0, self.q_min, self.q_max)
        w_ori = 0.3 if top_down else 0.0
        err = math.inf
        for _ in range(iters):
            self._pose(q)
            e_pos = target - d.site_xpos[self._site]
            err = float(np.linalg.norm(e_pos))
            mujoco.mj_jacSite(self.model, d, self._jacp, self._jacr, self._site)
            jp = self._jacp[:, self._vadr]
            if w_ori > 0.0:
                z = d.site_xmat[self._site].reshape(3, 3)[:, 2]
                e_ori = np.cross(z, _DOWN)  # rotation that turns z onto "down"
                ori_err = float(np.linalg.norm(e_ori))
                if err <= tol and ori_err < 0.05:
                    return q, err
                jac = np.vstack([jp, w_ori * self._jacr[:, self._vadr]])
                e = np.concatenate([e_pos, w_ori * e_ori])
            else:
                if err <= tol:
                    return q, err
                jac, e = jp, e_pos
            # damped least squares: dq = J^T (J J^T + lam^2 I)^-1 e, step capped for stability
            jjt = jac @ jac.T + (lam * lam) * np.eye(jac.shape[0])
            dq = jac.T @ np.linalg.solve(jjt, e)
            norm = float(np.linalg.norm(dq))
            if norm > 0.3:
                dq *= 0.3 / norm
            q = np.clip(q + dq, self.q_min, self.q_max)
        self._pose(q)
        err = float(np.linalg.norm(target - d.site_xpos[self._site]))
        if top_down and err > tol:
            # the orientation preference may pin the arm short of the target: polish position only
            q2, err2 = self._solve(target, q, False, tol, iters // 2, lam)
            if err2 < err:
                return q2, err2
        return q, err
