"""Planning for datasets: `crds-s3-sync --datasets ... --dry-run` against `crds bestrefs`.

Both read the headers of the same 1,000 JWST exposures (FITS files written by the
tests' writer, `tests/datasets.py`: NIRCam, MIRI, NIRSpec and NIRISS modes in turn)
and compute their best references under jwst_0541.pmap, with crds. crds bestrefs
reads a local cache holding the vendored rules (tests/data); crds-s3-sync first
reads the same rules from a bucket on 127.0.0.1 (nginx, plain HTTP), as any run
does, and writes nothing. Timed from process start to exit, tools alternating;
crds-s3-sync also pinned to one core (`taskset -c 0`: one worker process), to show
what the second core pays; and crds bestrefs with its garbage collection around each
header read turned off, as crds-s3-sync's workers run crds. crds bestrefs exits
non-zero on these files (it asks NIRSpec and NIRISS for a type, APCORR, the context
does not have): its time still counts, its exit status is shown.

    .venv/bin/python benchmarks/bestrefs.py [--datasets 1000] [--repeat 3] [--out FILE]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import BUCKET, PREFIX, RULES, WORK, load_average, start_nginx

sys.path.insert(0, str(RULES.parent))
from datasets import JWST, write_fits  # the tests' writer

OBS, CONTEXT = "jwst", "jwst_0541.pmap"
ROOT = WORK / "bestrefs"
SRV = ROOT / "srv"


def build(count: int) -> tuple[Path, Path]:
    """The datasets (made once per count), a crds cache of the rules, and the bucket."""
    datasets = ROOT / f"datasets-{count}"
    if not datasets.is_dir():
        modes = list(JWST.items())
        part = datasets.with_suffix(".part")
        shutil.rmtree(part, ignore_errors=True)
        for i in range(count):
            mode, keywords = modes[i % len(modes)]
            write_fits(part / f"jw{i:05d}_{mode}_uncal.fits", "JWST", keywords)
        part.rename(datasets)
    cache = ROOT / "crds-cache"
    for kind in ("mappings", "config"):
        for root in (cache / kind, SRV / BUCKET / PREFIX / kind):
            if not (root / OBS).is_dir():
                shutil.copytree(RULES / kind / OBS, root / OBS)
    return datasets, cache


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and the exit status. (CPU time is left out: crds-s3-sync's worker
    processes come from a fork server that no process waits for, so wait4 misses them.)"""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = load_average()  # at the end it counts the benchmark's own runs
    print(started, flush=True)
    datasets, cache = build(args.datasets)
    files = sorted(str(p) for p in datasets.iterdir())
    server, endpoints = start_nginx(SRV, ["http"], None, None)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CRDS_"))}
    ours = [
        str(bin_dir / "crds-s3-sync"),
        CONTEXT,
        *("--bucket", BUCKET, "--prefix", PREFIX, "--observatory", OBS),
        *("--endpoint-url", endpoints["http"], "--no-sign-request", "--quiet"),
        *("--cache", str(ROOT / "unused-cache"), "--dry-run", "--datasets", str(datasets)),
    ]
    crds_env = env | {
        "CRDS_PATH": str(cache),
        "CRDS_MODE": "local",
        "CRDS_SERVER_URL": "https://jwst-crds-serverless.stsci.edu",
        "CRDS_OBSERVATORY": OBS,
        "CRDS_READONLY_CACHE": "1",
    }
    theirs = [str(bin_dir / "crds"), "bestrefs", "--new-context", CONTEXT, "--files", *files]
    tools = {
        "crds-s3-sync": (ours, env),
        "crds-s3-sync, one core": (["taskset", "-c", "0", *ours], env),
        "crds bestrefs": (theirs, crds_env),
        # what crds-s3-sync's workers set: crds's garbage collection around each read off
        "crds bestrefs, gc off": (theirs, crds_env | {"CRDS_EXPLICIT_GARBAGE_COLLECTION": "0"}),
    }
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in tools}
    try:
        for repeat in range(args.repeat):
            order = list(tools)[repeat % len(tools) :] + list(tools)[: repeat % len(tools)]
            for name in order:
                command, environment = tools[name]
                run = timed(command, environment)
                runs[name].append(run)
                print(f"{name}: {run[0]:.2f} s, exit {run[1]}", flush=True)
    finally:
        server.terminate()
    lines = [
        f"# Planning {len(files):,} datasets under {CONTEXT}",
        "",
        f"At the start: {started}. At the end: {load_average()}.",
        "",
        "| tool | wall s (median, range) | exit |",
        "|---|---|---|",
    ]
    for name, done in runs.items():
        walls = [r[0] for r in done]
        lines.append(
            f"| {name} | {statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f})"
            f" | {sorted({r[1] for r in done})} |"
        )
    ours_wall = statistics.median(r[0] for r in runs["crds-s3-sync"])
    theirs_wall = statistics.median(r[0] for r in runs["crds bestrefs"])
    lines += ["", f"crds-s3-sync / crds bestrefs: {ours_wall / theirs_wall:.2f}"]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
