"""``python -m pipeline.install_check cpu|gpu``: the environment holds exactly one onnxruntime
build, and that build offers the execution providers its variant needs.

``onnxruntime`` and ``onnxruntime-gpu`` install the same ``onnxruntime`` module; with both,
whichever was installed last wins file by file (a broken mix). ``scripts/install.sh`` swaps
them for the GPU image and runs this check; so does ``make install``.
"""

from __future__ import annotations

import sys
from importlib import metadata

NEEDED = {"cpu": ("CPUExecutionProvider",),
          "gpu": ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider")}


def problems(variant: str, installed: set[str], providers: list[str]) -> list[str]:
    """Pure: what is wrong with ``installed`` distributions and ``providers`` for ``variant``."""
    want = "onnxruntime-gpu" if variant == "gpu" else "onnxruntime"
    other = "onnxruntime" if variant == "gpu" else "onnxruntime-gpu"
    out = []
    if want not in installed:
        out.append(f"{want} is not installed")
    if other in installed:
        out.append(f"{other} is installed next to {want}: both provide the onnxruntime module; "
                   f"`pip uninstall -y {other}` and reinstall {want}")
    missing = [p for p in NEEDED[variant] if p not in providers]
    if missing:
        out.append(f"onnxruntime offers {', '.join(providers)}; the {variant} variant needs {', '.join(missing)}")
    return out


def main(argv: list[str]) -> int:
    if argv not in (["cpu"], ["gpu"]):
        print("usage: python -m pipeline.install_check cpu|gpu", file=sys.stderr)
        return 2
    installed = set()
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(name)
            installed.add(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except ImportError as exc:
        providers = []
        print(f"install check: cannot import onnxruntime: {exc}", file=sys.stderr)
    bad = problems(argv[0], installed, providers)
    for p in bad:
        print(f"install check: {p}", file=sys.stderr)
    if not bad:
        print(f"install check: {argv[0]} ok, onnxruntime providers {','.join(providers)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
