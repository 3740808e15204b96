"""Reproduce the two-layer paper's Fig. 5a and 5b; the logic is orchestrator/paper_two_layer.py.

python scenarios/paper-two-layer/reproduce.py [--quick] [--out runs/paper-two-layer]
    [--figures 5a 5b] [--sizes 5 10 20 30 50]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.paper_two_layer import main

if __name__ == "__main__":
    sys.exit(main())
