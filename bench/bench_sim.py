"""Simulator speed: a whole small night, and one full-size science exposure (30 cameras).

    python bench/bench_sim.py [--skip-full]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    from desinight.sim import simulate_night
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate_night(20261124, Path(tmp) / "small", preset="small", seed=0)
        print(f"small night (6 exposures, 3 cameras): {time.perf_counter() - t0:.2f} s")
    if "--skip-full" in sys.argv:
        return
    import numpy as np

    from desinight.sim import _pool
    from desinight.sim import targets as TG
    p = I.PRESETS["full"]
    exps = [e for e in N.schedule(p, 20261124, 0) if e.obstype == "SCIENCE"]
    e = exps[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tile = TG.make_tile(p, e.tileid, np.random.default_rng([0, e.tileid, 5]))
        N.TILES[e.tileid] = tile
        pool = _pool(p)
        images = dict(pool.map(N.render_camera, [(p, c, e, 0) for c in e.cameras]))
        pool.close()
        t1 = time.perf_counter()
        N.write_exposure(Path(tmp), p, e, images, tile, e.expid)
        t2 = time.perf_counter()
        print(f"full science exposure (30 cameras 4096x{p.nx}, 5000 fibres): "
              f"{t2 - t0:.1f} s (render {t1 - t0:.1f} s, write {t2 - t1:.1f} s)")


if __name__ == "__main__":
    main()
