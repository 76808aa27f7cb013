"""The ROS 2 tests import their rmw_zenoh-like peer (``_rmw_peer``) by module name."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
