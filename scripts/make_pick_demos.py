#!/usr/bin/env python
"""Record pick demonstrations (the scripted pick on seeded placements, rendered perception).

    nice -n 10 python scripts/make_pick_demos.py --seeds 0:1000 --jobs 2 --out pick_demos.npz

See :mod:`rtvla.policy.pick.demos` for the file format.
"""

from __future__ import annotations

import sys

from rtvla.policy.pick.demos import main

if __name__ == "__main__":
    sys.exit(main())
