"""``pudding-train``: reserved for router training (``pudding-train fit --config configs/router.yaml``).

The router LightningModule lands with the router-training issue; until then the entry point says so plainly
instead of failing with an import error.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    print(
        "pudding-train: router training is not implemented yet (it comes with the router issue). "
        "Available now: pudding eval, pudding candidates, pudding dataset.",
        file=sys.stderr,
    )
    raise SystemExit(2)
