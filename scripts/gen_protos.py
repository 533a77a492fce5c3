"""Generate the Python code for protos/ into services/ (or another folder).

The generated modules land in `ebbflow/v1/` because protoc writes imports from
the proto package (`from ebbflow.v1 import load_pb2`); keeping the proto
package and the Python package the same makes those imports resolve without
rewriting generated code.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    """Generate every .proto under protos/ into out_dir; return the .proto files."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for package_dir in {out_dir / p.relative_to(PROTO_ROOT).parent for p in protos}:
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from protos/; never edit by hand (make proto)."""\n')
    return protos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "services")
    args = parser.parse_args()
    generate(args.out)


if __name__ == "__main__":
    sys.exit(main())
