"""Step time of naive / revgan / checkpoint cores measured interleaved in one process.

Separate processes (``bench memory``) are right for memory but let machine noise between runs
leak into time ratios; alternating the modes step by step exposes the same noise to all of them.
Prints the median step time of each mode and its ratio to naive (unpaired generator step as in
Table 5: F and G, backward).

    python pipelines/step_time_interleaved.py --depth 8 --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dmri_revgan.bench import bench_generator, unpaired_generator_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=3)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=4, help="steps per mode (first is warm-up)")
    parser.add_argument("--modes", default="naive,revgan,checkpoint")
    args = parser.parse_args()
    torch.manual_seed(0)
    channels = 6 if args.dims == 3 else 3
    x = torch.randn(1, channels, *([args.size] * args.dims))
    y = torch.randn_like(x)
    gens = {m: bench_generator(args.dims, args.width, args.depth, m) for m in args.modes.split(",")}
    times: dict[str, list[float]] = {m: [] for m in gens}
    for _ in range(args.rounds):
        for mode, gen in gens.items():
            start = time.perf_counter()
            gen.zero_grad(set_to_none=True)
            unpaired_generator_step(gen, x, y).backward()
            times[mode].append(time.perf_counter() - start)
    naive = statistics.median(times["naive"][1:]) if "naive" in times else None
    for mode, values in times.items():
        median = statistics.median(values[1:])
        ratio = f", {median / naive:.2f}× naive" if naive else ""
        print(f"{mode:>10}: {median:.3f} s median of {len(values) - 1}{ratio}")


if __name__ == "__main__":
    main()
