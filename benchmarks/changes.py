"""What keeping the cache true costs, and leaves behind: re-runs after files changed
in place, against a re-run with nothing changed and against `--verify`; and
SIGKILL at random moments of a sync, counting the hidden files left, then after
the next run.

Uses the realistic case of `bench.py` (the last 5 JWST contexts, 1,939 files,
1.1 GB) served by nginx over plain HTTP, into a cache on the benchmark's own disk
(benchmarks/.data), with the page cache warm, as on a re-run. Run:
`python benchmarks/changes.py` (needs nginx, as `make bench` does).
"""

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bench

OUT = bench.HERE / "results-changes.md"


def command(case: bench.Case, endpoint: str, cache: Path, *extra: str) -> list[str]:
    contexts = [arg for name in case.contexts for arg in ("--context", name)]
    return [
        *(bench.tool_path("crds-s3-sync"), "--bucket", bench.BUCKET, "--prefix", bench.PREFIX),
        *("--observatory", bench.OBS, "--endpoint-url", endpoint, "--no-sign-request"),
        *("--cache", str(cache), "--quiet", *contexts, *extra),
    ]


def timed(argv: list[str], env: dict[str, str], prepare: Callable[[], None], repeat: int) -> float:
    """Median seconds of `repeat` runs, each after `prepare`."""
    times = []
    for _ in range(repeat):
        prepare()
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def touch(paths: list[Path]) -> Callable[[], None]:
    """A new modification time, the bytes unchanged: each file must be re-hashed."""

    def prepare() -> None:
        now = time.time_ns()
        for n, path in enumerate(paths):
            os.utime(path, ns=(now, now + n))

    return prepare


def hidden(cache: Path) -> int:
    return sum(1 for p in cache.rglob(".*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    skip = (*bench.CA_VARIABLES, "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    case = bench.build_case("realistic", 200)
    server, endpoints = bench.start_nginx(case.srv, ["http"], None, None)
    try:
        endpoint = endpoints["http"]
        cache = bench.WORK / "changes" / "cache"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        start = time.perf_counter()
        subprocess.run(command(case, endpoint, cache), env=env, check=True)
        full = time.perf_counter() - start
        argv = command(case, endpoint, cache)
        refs = sorted(p for p in (cache / "references").rglob("*") if p.is_file())
        biggest = max(refs, key=lambda p: p.stat().st_size)
        total = sum(p.stat().st_size for p in refs)
        rows = [
            ("nothing changed", timed(argv, env, lambda: None, args.repeat)),
            (
                f"1 file touched ({biggest.stat().st_size / 2**20:.0f} MiB)",
                timed(argv, env, touch([biggest]), args.repeat),
            ),
            (
                f"every reference touched ({len(refs):,} files, {total / 2**20:,.0f} MiB)",
                timed(argv, env, touch(refs), args.repeat),
            ),
            ("--verify, nothing changed", timed([*argv, "--verify"], env, lambda: None, 1)),
        ]
        kills = []
        rng = random.Random(13)
        for _ in range(args.kills):
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            process = subprocess.Popen(argv, env=env)
            time.sleep(rng.uniform(0.3, max(0.4, full * 0.9)))
            process.send_signal(signal.SIGKILL)
            process.wait()
            left = hidden(cache) if cache.exists() else 0
            subprocess.run(argv, env=env, check=True)
            kills.append((left, hidden(cache)))
    finally:
        server.terminate()
        server.wait()
    lines = [
        "# Keeping the cache true",
        "",
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d')}. The realistic case ({len(refs):,} references), "
        f"nginx on 127.0.0.1 over HTTP, the cache on the benchmark's disk; a full sync "
        f"took {full:.2f} s. Medians of {args.repeat} (--verify: one run).",
        "",
        "| re-run after | wall s |",
        "|---|---|",
        *(f"| {what} | {seconds:.2f} |" for what, seconds in rows),
        "",
        f"SIGKILL at {args.kills} random moments of a sync (0.3 s to 90% of a full sync):",
        f"hidden files left by the kills: {[left for left, _ in kills]}; "
        f"after each next run: {[after for _, after in kills]}.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
