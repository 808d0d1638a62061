"""``python -m pudding.cli <command>``: the same as ``pudding <command>``."""

from pudding.cli import main

main()
