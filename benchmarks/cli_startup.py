"""How long `compozy` takes to start: `--version`, `--help` and shell completion of a name.

    python benchmarks/cli_startup.py [--rounds N]

Runs each command N times (default 10) in a fresh interpreter, as a shell would, and prints
the median and the slowest wall time. `compozy --version` should stay under 0.3 s: the
commands' modules (SQLAlchemy, FastAPI, the engine) are imported only when a command runs
(compozy/cli/main.py, `_COMMANDS`). To see what an import costs:
`python -X importtime -m compozy --version 2>&1 | sort -t'|' -k2 -n | tail`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "compozy --version": (["--version"], {}),
    "compozy --help": (["--help"], {}),
    "complete 'compozy mig'": (
        [],
        {"_COMPOZY_COMPLETE": "complete_bash", "COMP_WORDS": "compozy mig", "COMP_CWORD": "1"},
    ),
    "python -c pass (floor)": (None, {}),
}


def _time(args: list[str] | None, env: dict[str, str]) -> float:
    command = [sys.executable, "-c", "pass"] if args is None else [sys.executable, "-m", "compozy"]
    started = time.perf_counter()
    subprocess.run(
        command + (args or []),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    rounds = parser.parse_args().rounds
    print(f"{'command':<26} {'median':>8} {'slowest':>8}   ({rounds} runs each)")
    for name, (args, env) in CASES.items():
        times = [_time(args, env) for _ in range(rounds)]
        print(f"{name:<26} {statistics.median(times):>7.3f}s {max(times):>7.3f}s")


if __name__ == "__main__":
    main()
