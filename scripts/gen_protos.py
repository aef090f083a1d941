"""Regenerate the Python code for the API in ``protos/`` into the client package.

Run ``python scripts/gen_protos.py`` (or ``make protos``); ``--check`` fails when the committed code is
stale. The output directory is owned by this script: never edit it by hand.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "clients" / "python" / "src"
PACKAGE_DIR = Path("salon") / "v1"
INIT_TEXT = '"""Generated from protos/salon/v1 by scripts/gen_protos.py. Do not edit."""\n'


def generate(out_root: Path) -> None:
    """Run protoc (from grpcio-tools) over every .proto under protos/ into ``out_root``."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)
    # salon is a namespace package (the client and the engine share it): each portion marks itself typed.
    (out_root / PACKAGE_DIR / "py.typed").write_text("")


def _tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed code differs from a fresh run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        target = OUT_ROOT / PACKAGE_DIR
        new, old = _tree(fresh / PACKAGE_DIR), _tree(target) if target.exists() else {}
        stale = sorted(
            name
            for name in set(new) | set(old)
            if name not in new or name not in old or not filecmp.cmp(new[name], old[name], shallow=False)
        )
        if args.check:
            if stale:
                print("generated code is stale; run `make protos`:", *stale, sep="\n  ", file=sys.stderr)
                return 1
            print("generated code is up to date")
            return 0
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(fresh / PACKAGE_DIR, target)
        print(f"generated {len(new)} files into {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
