"""Supernet overheads, measured side by side in one run.

1. Inference: the supernet set to an arch vs the extracted plain subnet, same input.
2. Training: one step that samples 4 subnets (forward + backward each, gradients summed),
   vs one step of a static network of the largest arch.
3. Cost model: calls per second of ``arch_costs``.

Writes benchmarks/results/supernet.json.  Run: python benchmarks/bench_supernet.py [--quick | --tiny]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import interleaved, write_results  # noqa: E402
from ofa_edge.space.costs import arch_costs  # noqa: E402
from ofa_edge.space.supernet import OFASupernet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="ofa-mbv3-tiny")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--tiny", action="store_true", help="one repeat, 50 cost-model calls (the tests)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats, runs = (1, 1) if args.tiny else (3, 3) if args.quick else (7, 5)

    net = OFASupernet(args.space, 10).to(memory_format=torch.channels_last)
    space = net.space
    arch = space.sample(0, resolution=args.resolution)
    x = torch.rand(args.batch, 3, args.resolution, args.resolution).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,))

    # 1. inference
    net.eval()
    net.set_active(arch)
    sub = net.extract(arch).eval().to(memory_format=torch.channels_last)

    def supernet_forward():
        with torch.no_grad():
            net(x)

    def subnet_forward():
        with torch.no_grad():
            sub(x)

    inference = interleaved({"supernet_at_arch": supernet_forward, "extracted_subnet": subnet_forward},
                            repeats, runs)

    # 2. training step
    net.train()
    largest = net.extract(space.largest(args.resolution)).train().to(memory_format=torch.channels_last)
    opt_super = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    opt_static = torch.optim.SGD(largest.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    step_seed = iter(range(10**9))

    def supernet_step_4_subnets():
        opt_super.zero_grad(set_to_none=True)
        seed = next(step_seed)
        for i in range(4):
            net.set_active(space.sample(seed * 4 + i, resolution=args.resolution))
            F.cross_entropy(net(x), labels).backward()
        opt_super.step()

    def static_largest_step():
        opt_static.zero_grad(set_to_none=True)
        F.cross_entropy(largest(x), labels).backward()
        opt_static.step()

    training = interleaved({"supernet_step_4_subnets": supernet_step_4_subnets,
                            "static_largest_step": static_largest_step}, repeats, max(1, runs // 2))

    # 3. cost model
    archs = space.sample_many(50 if args.tiny else 500, seed=1)
    start = time.perf_counter()
    for a in archs:
        arch_costs(space.preset, a, 10)
    cost_seconds = (time.perf_counter() - start) / len(archs)

    figures = {
        "inference": inference,
        "inference_ratio_supernet_over_subnet": inference["supernet_at_arch"]["median_s"]
        / inference["extracted_subnet"]["median_s"],
        "training": training,
        "training_ratio_4_subnets_over_static_largest": training["supernet_step_4_subnets"]["median_s"]
        / training["static_largest_step"]["median_s"],
        "cost_model_us_per_call": cost_seconds * 1e6,
        "cost_model_calls_per_s": 1.0 / cost_seconds,
        "arch": str(arch),
        "arch_costs": arch_costs(space.preset, arch, 10).to_json(),
    }
    settings = {"space": args.space, "resolution": args.resolution, "batch": args.batch,
                "threads": args.threads, "repeats": repeats, "runs": runs, "channels_last": True, "tiny": args.tiny}
    path = write_results("supernet", figures, settings)
    print(f"inference: supernet {inference['supernet_at_arch']['median_s'] * 1e3:.2f} ms vs extracted "
          f"{inference['extracted_subnet']['median_s'] * 1e3:.2f} ms per batch of {args.batch} "
          f"(ratio {figures['inference_ratio_supernet_over_subnet']:.2f})")
    print(f"training: 4-subnet supernet step {training['supernet_step_4_subnets']['median_s'] * 1e3:.1f} ms vs "
          f"static largest {training['static_largest_step']['median_s'] * 1e3:.1f} ms "
          f"(ratio {figures['training_ratio_4_subnets_over_static_largest']:.2f})")
    print(f"cost model: {cost_seconds * 1e6:.1f} µs per call ({1 / cost_seconds:,.0f} calls/s)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
