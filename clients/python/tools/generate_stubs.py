"""Regenerates the gRPC stubs in src/augserve/v1/ from ../../proto with grpcio-tools.

    python tools/generate_stubs.py          # write them
    python tools/generate_stubs.py --check  # exit 1 if the committed stubs are stale

The stubs are committed so that `pip install` needs no code generator; the test suite runs the
check, so a proto change without regenerated stubs fails CI. Use the grpcio-tools version pinned in
requirements-dev.txt: the generated code records it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent.parent / "proto"
PROTO = "augserve/v1/augserve.proto"
OUT = HERE.parent / "src"
FILES = ["augserve_pb2.py", "augserve_pb2.pyi", "augserve_pb2_grpc.py"]


def generate(out_dir: pathlib.Path) -> None:
    from grpc_tools import protoc  # imported here: only this tool needs grpcio-tools

    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO_ROOT / PROTO}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(pathlib.Path(tmp))
        stale = []
        for name in FILES:
            fresh = (pathlib.Path(tmp) / "augserve/v1" / name).read_bytes()
            committed = OUT / "augserve/v1" / name
            if args.check:
                if not committed.exists() or committed.read_bytes() != fresh:
                    stale.append(str(committed))
            else:
                committed.write_bytes(fresh)
                print(f"wrote {committed}")
    if stale:
        print("stale gRPC stubs (run clients/python/tools/generate_stubs.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
