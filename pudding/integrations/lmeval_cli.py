"""lm-eval's own command line with the ``pudding`` model registered.

python -m pudding.integrations.lmeval_cli run --model pudding --model_args bundle=checkpoints/router/bundle --tasks piqa
"""

from __future__ import annotations

from pudding.integrations import register_lm_eval_model


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    register_lm_eval_model()
    cli_evaluate()


if __name__ == "__main__":
    main()
