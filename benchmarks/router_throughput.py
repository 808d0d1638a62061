"""Router training speed: random batches vs length-grouped batches (items/s of forward + backward + AdamW step).

    python benchmarks/router_throughput.py --dataset checkpoints/router_dataset --steps 30

Random batches are padded to their longest prompt, so with a long-tailed length distribution (BoolQ passages
average 139 router tokens, PIQA goals 14) most of their compute goes to padding; length-grouped batches
(:class:`pudding.router.sampler.LengthGroupedBatchSampler`, the default) avoid it. Runs ``--steps`` training steps
of each kind from the same start (after ``--warmup`` untimed steps) and writes
``<out_dir>/router_throughput.json``. The machine's load average is recorded: on a shared machine both are slower.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from pudding.core.io import atomic_write_json
from pudding.router.data import RouterDataModule
from pudding.router.module import RouterModule


def timed_steps(module: RouterModule, loader, steps: int, warmup: int) -> dict:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5)
    module.train()
    items = tokens = padded = 0
    start = None
    for i, batch in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        if i >= warmup + steps:
            break
        loss = module.loss_fn(module(batch["input_ids"], batch["attention_mask"]), batch["targets"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            items += len(batch["targets"])
            tokens += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
    seconds = time.perf_counter() - start
    return {"items": items, "seconds": seconds, "items_per_s": items / seconds, "padding_share": 1 - tokens / padded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="checkpoints/router_dataset")
    parser.add_argument("--encoder", default="default")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out_dir", default="benchmarks/results")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    results = {}
    for name, grouped in (("random", False), ("length_grouped", True)):
        data = RouterDataModule(args.dataset, router=args.encoder, batch_size=args.batch_size, length_grouped=grouped)
        data.setup("fit")
        torch.manual_seed(0)
        module = RouterModule(encoder=args.encoder)
        module.configure_choices(data.choices, 0, data.meta)
        results[name] = timed_steps(module, data.train_dataloader(), args.steps, args.warmup)
        r = results[name]
        print(f"{name:>15}: {r['items_per_s']:7.1f} items/s  (padding {100 * r['padding_share']:.0f}% of tokens)")
    speedup = results["length_grouped"]["items_per_s"] / results["random"]["items_per_s"]
    print(f"length-grouped / random: {speedup:.1f}x")
    out = Path(args.out_dir)
    atomic_write_json(
        out / "router_throughput.json",
        {
            "config": vars(args),
            "results": results,
            "speedup": speedup,
            "threads": torch.get_num_threads(),
            "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        },
    )


if __name__ == "__main__":
    main()
