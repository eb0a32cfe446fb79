"""The `unimp-bench` command line: Typer wiring only, each command parses its options and calls one
library function with keyword arguments.

    common.py   the apps, consoles, error handling, logging (--verbose) and shared options
    data.py     prepare amazon|synthetic|sequences, stats, build
    listing.py  tasks list|show, baselines list|export
    runs.py     score, baselines run, train, eval, leaderboard, demo
    ablations.py  ablations run
    tokenizer.py  tokenizer train|encode|decode
    generate.py   generate (one personalized image)
"""

from unimp_bench.cli import ablations, data, generate, listing, runs, tokenizer  # noqa: F401  (each registers its commands)
from unimp_bench.cli.common import app

__all__ = ["app"]
