"""The rtvla exception tree.

Every error rtvla raises derives from :class:`RtvlaError` and from the builtin it refines,
so callers can catch either. Messages name the field and the offending value.

::

    RtvlaError
    ├── ConfigError (ValueError)              bad or unknown configuration
    │   └── PartError (ConfigError)           unknown part, bad part options, factory import failed
    ├── TimingError (RuntimeError)            loop or clock misuse
    ├── RealtimeSetupError (OSError)          affinity / scheduler / mlock failures
    ├── ChannelError (RuntimeError)           channel misuse, size or shape mismatch
    │   └── ChannelClosed (ChannelError)      publish/read after close
    ├── ComponentError (RuntimeError)         a component failed in setup/step
    ├── ResourceError (RuntimeError)          admission refused, unknown allocation
    ├── PerceptionError (RuntimeError)
    │   ├── SourceError (OSError)             camera/file/stream unreadable or dropped
    │   ├── FrameError (ValueError)           frame of the wrong shape or dtype
    │   └── ModelError (ValueError)           corrupt model file or unexpected output layout
    ├── PlanningError (RuntimeError)
    │   ├── PlannerTimeout (TimeoutError)     the answer missed its deadline
    │   ├── PlanParseError (ValueError)       no valid JSON plan in the answer
    │   ├── PlanValidationError (ValueError)  plan breaks capabilities or bounds
    │   ├── PlannerRefusal (ValueError)       the planner does not understand the instruction
    │   └── LLMServerError (ConnectionError)  transport or HTTP failure
    ├── RobotError (RuntimeError)
    │   ├── CommandRejected (ValueError)      non-finite or out-of-limit command
    │   ├── RenderError (RuntimeError)        no GL backend / offscreen rendering failed
    │   └── ControlLost (RobotError)          the control process died or stopped ticking
    ├── PolicyError (RuntimeError)
    │   ├── PolicyServerError (ConnectionError) the policy server failed, errored or went away
    │   └── PolicyOutputError (ValueError)    actions of the wrong shape, dtype or non-finite
    ├── CodecError (ValueError)               a wire payload that cannot be (de)serialized safely
    ├── RecordError (OSError)                 the run record / dataset could not be written or read
    ├── Ros2Error (RuntimeError)              ROS 2 wire-format misuse (unknown type, bad key)
    ├── ActionError (RuntimeError)
    │   ├── TrajectoryError (ValueError)      target outside limits, ruckig failure
    │   ├── NavigationError (RuntimeError)    no path, stuck, goal unreachable
    │   ├── IKError (ValueError)              inverse kinematics did not converge
    │   └── SkillError (RuntimeError)         a task step failed or timed out
    └── RuntimeStackError (RuntimeError)      the runtime could not build or run the stack
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "ChannelClosed",
    "ChannelError",
    "CodecError",
    "CommandRejected",
    "ComponentError",
    "ConfigError",
    "ControlLost",
    "FrameError",
    "IKError",
    "LLMServerError",
    "ModelError",
    "NavigationError",
    "PartError",
    "PerceptionError",
    "PlanParseError",
    "PlanValidationError",
    "PlannerRefusal",
    "PlannerTimeout",
    "PlanningError",
    "PolicyError",
    "PolicyOutputError",
    "PolicyServerError",
    "RealtimeSetupError",
    "RecordError",
    "RenderError",
    "ResourceError",
    "RobotError",
    "Ros2Error",
    "RtvlaError",
    "RuntimeStackError",
    "SkillError",
    "SourceError",
    "TimingError",
    "TrajectoryError",
]


class RtvlaError(Exception):
    """Base of every error raised by rtvla."""


class ConfigError(RtvlaError, ValueError):
    """Configuration that is malformed, of the wrong type, out of range or unknown."""


class TimingError(RtvlaError, RuntimeError):
    """Misuse of a clock or rate loop (for example a non-positive rate)."""


class RealtimeSetupError(RtvlaError, OSError):
    """A requested real-time setting (affinity, SCHED_FIFO, mlockall) could not be applied."""


class ChannelError(RtvlaError, RuntimeError):
    """Channel misuse: wrong size, shape or dtype, or an unusable transport."""


class ChannelClosed(ChannelError):
    """The channel was closed."""


class ComponentError(RtvlaError, RuntimeError):
    """A component failed during setup, step or teardown."""


class ResourceError(RtvlaError, RuntimeError):
    """A resource request was refused or referred to an unknown allocation."""


class PerceptionError(RtvlaError, RuntimeError):
    """Base of perception failures."""


class SourceError(PerceptionError, OSError):
    """A frame source could not be opened or stopped delivering frames."""


class FrameError(PerceptionError, ValueError):
    """A frame has the wrong shape or dtype."""


class ModelError(PerceptionError, ValueError):
    """A detector model is unreadable or has an unexpected input/output layout."""


class PlanningError(RtvlaError, RuntimeError):
    """Base of language-planning failures."""


class PlannerTimeout(PlanningError, TimeoutError):
    """The planner did not answer before its deadline."""


class PlanParseError(PlanningError, ValueError):
    """The planner's answer held no parseable plan."""


class PlanValidationError(PlanningError, ValueError):
    """A plan names an unknown action or target, or a value outside the robot's bounds."""


class PlannerRefusal(PlanningError, ValueError):
    """The planner does not understand the instruction and will not guess."""


class LLMServerError(PlanningError, ConnectionError):
    """The LLM server could not be reached or answered with an error status."""


class RobotError(RtvlaError, RuntimeError):
    """Base of robot and simulator failures."""


class CommandRejected(RobotError, ValueError):
    """A command was non-finite or outside the robot's limits and was not executed."""


class RenderError(RobotError):
    """Offscreen rendering is unavailable (no GL backend) or failed."""


class ActionError(RtvlaError, RuntimeError):
    """Base of action-execution failures."""


class TrajectoryError(ActionError, ValueError):
    """A trajectory target is outside limits or the trajectory generator failed."""


class NavigationError(ActionError):
    """No path exists, the robot is stuck, or the goal is unreachable."""


class IKError(ActionError, ValueError):
    """Inverse kinematics found no solution within tolerance."""


class SkillError(ActionError):
    """A task step failed or exceeded its timeout."""


class RuntimeStackError(RtvlaError, RuntimeError):
    """The runtime could not build, start or run the configured stack."""


class PartError(ConfigError):
    """A part (robot, camera, detector, planner, policy) is unknown, cannot be imported, or
    its options table is invalid; the message names the part and the field."""


class ControlLost(RobotError):
    """The control process died, hung (stopped ticking) or could not be reached."""


class PolicyError(RtvlaError, RuntimeError):
    """Base of action-policy failures."""


class PolicyServerError(PolicyError, ConnectionError):
    """A policy server could not be reached, answered with an error, or went away."""


class PolicyOutputError(PolicyError, ValueError):
    """A policy returned actions of the wrong shape or dtype, or non-finite actions."""


class CodecError(RtvlaError, ValueError):
    """A wire payload could not be encoded or decoded safely (unsupported dtype, bad header)."""


class RecordError(RtvlaError, OSError):
    """A run record, video or dataset could not be written or read back."""


class Ros2Error(RtvlaError, RuntimeError):
    """ROS 2 wire-format misuse: an unknown message type, a malformed key or attachment."""
