"""System calls as the kernel saw them: a command run under strace (Debian's
package), its calls read back in time order."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

LINE = re.compile(r"^(\d+\.\d+) (\w+)\((.*)\) += (-?\d+)")
FD_PATH = re.compile(r"^\d+<([^>]+)>")
RENAME = re.compile(r'"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"')

needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None, reason="needs strace (apt-get install strace)"
)


FLUSHES = "openat,rename,renameat,renameat2,fsync,fdatasync,syncfs"


def traced(command: list[str], log: Path, calls: str = FLUSHES) -> subprocess.CompletedProcess:
    """Run `command` under strace, each thread's calls in its own `log.<tid>`."""

    return subprocess.run(
        [
            "strace",
            "-f",
            "-ff",
            "-ttt",
            "-y",
            "-qq",
            "-e",
            f"trace={calls}",
            "-o",
            str(log),
            *command,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def events(log: Path) -> list[tuple[float, str, str]]:
    """Every completed call of every thread, in time order: (time, call, arguments)."""
    found = []
    for part in log.parent.glob(f"{log.name}.*"):
        for line in part.read_text().splitlines():
            if match := LINE.match(line):
                time, call, arguments, result = match.groups()
                if result != "-1":
                    found.append((float(time), call, arguments))
    return sorted(found)
