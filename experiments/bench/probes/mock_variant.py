"""Write the accuracy benchmark's mock CAS(ME)² again with weaker distractors or stronger
expressions.

A control for frame_probe.py (experiments/bench/accuracy_log.md, "Fourth round"): the same
subjects, expressions and blinks as `make bench-accuracy`'s mock (the same MockSpec and seed),
with head drift, head rotation, lighting changes and sensor noise multiplied by `--scale`
(0: none), except the one named by `--keep`, and every MaE's and ME's amplitude multiplied by
`--amplitude`. Not part of mespot, and not the benchmark: the benchmark stays as it is.

    python experiments/bench/probes/mock_variant.py data/probe/quiet --scale 0
    mespot-preprocess data=casme2 data.root=data/probe/quiet paths.cache_dir=data/probe/cache \
      size=64
"""

from __future__ import annotations

import argparse
import dataclasses

from mespot.bench.accuracy import SYNTH
from mespot.data import synth
from mespot.data.synth import MockSpec, render, write_mock

BENCHMARK = MockSpec(dataset="casme2", **SYNTH)  # the mock of `make bench-accuracy`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--scale", type=float, default=1.0, help="distractor strength (1: as is)")
    names = [f.name for f in dataclasses.fields(render.Nuisance)]
    parser.add_argument("--keep", choices=names, help="keep this distractor as it is")
    parser.add_argument("--amplitude", type=float, default=1.0, help="expression amplitude factor")
    args = parser.parse_args()
    defaults = render.Nuisance()
    nuisance = render.Nuisance(
        **{n: getattr(defaults, n) * (1 if n == args.keep else args.scale) for n in names}
    )
    # the same draws from the same seed, scaled: the events keep their timing and regions
    render.ME_AMPLITUDE = tuple(a * args.amplitude for a in render.ME_AMPLITUDE)
    render.MAE_AMPLITUDE = tuple(a * args.amplitude for a in render.MAE_AMPLITUDE)
    synth._nuisance = lambda _scale: nuisance  # the spec keeps distractors=1
    write_mock(BENCHMARK, args.out, workers=1)  # one process: the patched renderer is used
    print(f"wrote {args.out} with {nuisance}, expression amplitudes × {args.amplitude}")


if __name__ == "__main__":
    main()
