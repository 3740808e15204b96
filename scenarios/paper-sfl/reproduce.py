"""Reproduce the SFL paper's Figs. 4(a) and 5(a); the logic is orchestrator/paper_sfl.py.

python scenarios/paper-sfl/reproduce.py [--quick] [--out runs/paper-sfl] [--runs N]
    [--populations 10 100 200 300] [--fig4-population P] [--lambdas 0.05 ...] [--emds 1.5 ...]
    [--deltas e^-1 ...] [--rounds N] [--model small-cnn|alexnet|mlp] [--figures 4 5]
    [--seed N] [--dataset mnist|cifar10 --dataset-root DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.paper_sfl import main

if __name__ == "__main__":
    sys.exit(main())
