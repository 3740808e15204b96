"""Reproduce the BEES paper's Figs. 3-8; the logic is orchestrator/paper_bees.py.

python scenarios/paper-bees/reproduce.py [--quick] [--out runs/paper-bees]
    [--figures 3 4 5 6 7 8] [--seed N] [--blocks N] [--ue-cpu-hz HZ]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.paper_bees import main

if __name__ == "__main__":
    sys.exit(main())
