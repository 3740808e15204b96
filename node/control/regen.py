"""Regenerate control_pb2.py, control_pb2_grpc.py and control_pb2.pyi from control.proto.

    .venv/bin/python node/control/regen.py

(grpcio-tools, in the dev extra). The generated modules are checked in; ruff and mypy skip
them (pyproject.toml). The import in control_pb2_grpc.py is made package-relative here.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> int:
    """Run protoc on control.proto; returns its exit code."""
    from grpc_tools import protoc

    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            str(HERE / "control.proto"),
        ]
    )
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
