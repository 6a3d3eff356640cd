"""Run every benchmark in bench/ (each prints its figures and ratios against a peer)."""

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = ["tree", "passthru", "vm", "hardening", "floor", "cores", "vfio", "cdq", "metrics"]


def main() -> int:
    sys.path.insert(0, str(HERE.parent))
    selected = sys.argv[1:] or BENCHES
    for name in selected:
        print(f"== bench/{name}.py")
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
