"""lm-eval's own command line with the ``pudding`` model registered.

python -m pudding.routed.lmeval_cli run --model pudding --model_args bundle=checkpoints/router/bundle --tasks piqa
"""

from __future__ import annotations

import pudding  # noqa: F401  (registers the model)


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
