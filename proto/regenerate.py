"""Regenerate the checked-in stubs from ``decal.proto``::

    python -m decal.proto.regenerate            # rewrite decal_pb2.py(i), decal_pb2_grpc.py
    python -m decal.proto.regenerate --check    # exit 1 if the checked-in files are stale

Policy: the stubs are generated with grpcio-tools and checked in, so installing decal needs
no code generation step and the stubs can be read and reviewed. ``tests/test_proto_stubs.py``
regenerates into a temporary folder and fails when the result differs from the checked-in
files. grpcio-tools writes ``import decal_pb2``; that import is rewritten to a
package-relative one so the stubs live inside ``decal.proto``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "decal.proto"
GENERATED = ("decal_pb2.py", "decal_pb2.pyi", "decal_pb2_grpc.py")


def generate(out_dir: Path, proto_dir: Path = HERE) -> dict[str, str]:
    """Run protoc (grpcio-tools) on ``proto_dir/decal.proto`` into ``out_dir``; return
    {file name: text} of the generated files, imports fixed to package-relative."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(proto_dir / PROTO),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
    texts: dict[str, str] = {}
    for name in GENERATED:
        path = out_dir / name
        text = path.read_text()
        if name == "decal_pb2_grpc.py":
            text = text.replace("import decal_pb2 as decal__pb2", "from . import decal_pb2 as decal__pb2")
        path.write_text(text)
        texts[name] = text
    return texts


def stale_files(proto_dir: Path = HERE) -> list[str]:
    """Names of the checked-in stubs that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), proto_dir)
    return [name for name, text in fresh.items() if not (proto_dir / name).exists() or (proto_dir / name).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the stubs are current")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale generated stubs: {', '.join(stale)}; run python -m decal.proto.regenerate", file=sys.stderr)
            return 1
        print("generated stubs are current")
        return 0
    generate(HERE)
    print(f"wrote {', '.join(GENERATED)} in {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
