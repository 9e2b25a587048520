"""Filling a cache from a CRDS server: crds-s3-sync against `crds sync` and aria2c.

The server is the tests' CRDS stand-in (`tests/crds_server.py`, its JSON-RPC in
Python) whose answers send every file GET to nginx (`bench.start_nginx`), so the
bytes come as fast as a real front end serves them. Its files are JWST's newest
vendored context, jwst_0541.pmap: 124 mappings and 1,794 synthetic references
whose sizes are the real ones (server_config's) scaled down to 1.16 GB in all.
Two links: `http` (loopback) and `far` (nginx waits 40 ms before each answer and
sends each at 100 MiB/s at most; the JSON-RPC answers wait 40 ms too).

The tools, each into an empty cache on the disk (`--dest`), alternating, with
the kernel's writeback of the last run waited for before each (`bench.settle`):
- crds-s3-sync: `crds-s3-sync --server URL jwst_0541.pmap` (its default: 16 connections);
- crds sync: `crds sync --contexts jwst_0541.pmap --fetch-references` (the official
  client, one file at a time);
- aria2c: `-j 16 -x 1` with `checksum=sha-1=...` for every file, given the list of
  URLs it would otherwise have to learn from the server (so it asks no RPC).

    .venv/bin/python benchmarks/server.py [--repeat 3] [--links far,http] [--out FILE]

To explore, BENCH_EXTRA adds flags to crds-s3-sync's command (`--no-fsync`,
`--jobs 32`) and BENCH_WRAP runs it under another program (`py-spy record ... --`).
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import RULES, WORK, far_delay, load_average, set_aside, settle, start_nginx

sys.path.insert(0, str(RULES.parent))
from crds_server import Serving, StandIn, build_standin  # the tests' stand-in

from crds_s3_sync.rules.mapping import parse_mapping
from crds_s3_sync.rules.server_config import parse_server_config

OBS, CONTEXT = "jwst", "jwst_0541.pmap"
TOTAL = 1_160_000_000  # bytes of references, the real sizes scaled down to this
ROOT = WORK / "crds-server"
SRV = ROOT / "srv"
BIN = Path(sys.executable).parent
FAR_RPC = 0.04  # seconds before each JSON-RPC answer on the far link
TOOLS = ("crds-s3-sync", "aria2c", "crds-sync")
EXTRA = os.environ.get("BENCH_EXTRA", "").split()  # more flags for crds-s3-sync, to explore
WRAP = os.environ.get("BENCH_WRAP", "").split()  # a program to run it under (a profiler)


def closure() -> tuple[list[str], list[str]]:
    """The context's mappings and references, from the vendored rules."""
    mappings, references, level = set(), set(), [CONTEXT]
    while level:
        name = level.pop()
        if name not in mappings:
            mappings.add(name)
            mapping = parse_mapping(name, (RULES / "mappings" / OBS / name).read_text())
            level += mapping.mappings
            references.update(mapping.references)
    return sorted(mappings), sorted(references)


def scaled_sizes(references: list[str]) -> dict[str, int]:
    """The real size of each reference (server_config's), scaled so that they come to
    TOTAL; at least 1 KiB each."""
    text = (RULES / "config" / OBS / "server_config").read_text()
    real = {name: meta.size for name, meta in parse_server_config(text, OBS).metadata.items()}
    known = sum(real.get(name, 0) for name in references)
    return {name: max(1024, real.get(name, 0) * TOTAL // known) for name in references}


def build() -> StandIn:
    """The stand-in (mappings in memory, for its answers) and every file under SRV for
    nginx, written once: kept while the server_config it was built with is unchanged."""
    mappings, references = closure()
    sizes = scaled_sizes(references)
    standin = build_standin(RULES, OBS, sizes.__getitem__, mappings=mappings)
    stamp = hashlib.sha1(repr(sorted(standin.server_config.items())).encode()).hexdigest()
    if (ROOT / "built").exists() and (ROOT / "built").read_text() == stamp:
        standin.files = {k: v for k, v in standin.files.items() if k.startswith("mappings/")}
        return standin
    shutil.rmtree(SRV, ignore_errors=True)
    for key, data in standin.files.items():
        path = SRV / "unchecked_get" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (ROOT / "built").write_text(stamp)
    standin.files = {k: v for k, v in standin.files.items() if k.startswith("mappings/")}
    return standin


def aria2c_input(standin: StandIn, files_url: str, dest: Path) -> Path:
    """aria2c's input file: each of the context's files, where crds puts it, with its
    SHA-1 from server_config."""
    metadata = parse_server_config(repr(standin.server_config), OBS).metadata
    mappings, references = closure()
    lines = []
    for kind, names in (("mappings", mappings), ("references", references)):
        for name in names:
            lines += [
                f"{files_url}/unchecked_get/{kind}/{OBS}/{name}",
                f"  dir={dest / kind / OBS}",
                f"  out={name}",
                f"  checksum=sha-1={metadata[name].sha1}",
            ]
    path = ROOT / "aria2c-input.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def command(tool: str, rpc_url: str, dest: Path, aria2c: Path) -> tuple[list[str], dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRDS_", "AWS_", "HTTP"))} | {
        "PYTHONDONTWRITEBYTECODE": "1"
    }
    if tool == "crds-s3-sync":
        ours = [str(BIN / "crds-s3-sync"), "--server", rpc_url, CONTEXT, "--cache", str(dest)]
        return [*WRAP, *ours, *EXTRA], env
    if tool == "crds-sync":
        script = "from crds import sync; sync.SyncScript()()"
        argv = ["--contexts", CONTEXT, "--fetch-references"]
        return [sys.executable, "-c", script, *argv], env | {
            "CRDS_SERVER_URL": rpc_url,
            "CRDS_PATH": str(dest),
            "CRDS_MODE": "remote",
        }
    return [
        "aria2c",
        "-j",
        "16",
        "-x",
        "1",
        "--input-file",
        str(aria2c),
        "--file-allocation=none",
        "--auto-file-renaming=false",
        "--allow-overwrite=true",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--download-result=hide",
    ], env


def timed(argv: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {done.returncode}: see {log}")
    return seconds


def check(dest: Path, standin: StandIn, count: int) -> None:
    """Every file of the context is there, at its size."""
    found = [p for p in dest.rglob("*") if p.is_file() and "config" not in p.parts]
    if len(found) < count:
        raise SystemExit(f"{dest}: {len(found)} files, expected {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--links", default="far,http")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--dest", type=Path, default=ROOT / "dest")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results-server.md"))
    args = parser.parse_args()
    links, tools = args.links.split(","), args.tools.split(",")
    print(load_average(), flush=True)
    standin = build()
    mappings, references = closure()
    count = len(mappings) + len(references)
    delay = far_delay(ROOT / "nginx-probe") if "far" in links else None
    nginx, endpoints = start_nginx(SRV, links, None, None, delay)
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for link in links:
            standin.files_url = endpoints[link]
            standin.faults.delay = FAR_RPC if link == "far" else 0.0
            with Serving(standin) as rpc_url:
                for round_ in range(args.repeat):
                    order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
                    for tool in order:
                        dest = args.dest / f"{tool}-{link}"
                        set_aside(dest)
                        dest.mkdir(parents=True)
                        aria2c = aria2c_input(standin, endpoints[link], dest)
                        waited = settle()
                        argv, env = command(tool, rpc_url, dest, aria2c)
                        seconds = timed(argv, env, ROOT / f"{tool}-{link}.log")
                        check(dest, standin, count)
                        times.setdefault((link, tool), []).append(seconds)
                        print(
                            f"{link} {tool}: {seconds:.1f} s (settled {waited:.1f} s)", flush=True
                        )
    finally:
        nginx.terminate()
        nginx.wait()
    report(args.out, times, links, tools, count)


def report(
    out: Path, times: dict[tuple[str, str], list[float]], links: list[str], tools: list[str], n: int
) -> None:
    lines = [
        f"# Filling a cache from a CRDS server: {CONTEXT}, {n:,} files, 1.16 GB",
        "",
        f"{load_average()} at the end; 2 cores; an empty cache on the disk; tools alternating.",
        "",
        "| link | tool | runs | median s | range s | files/s | time / crds-s3-sync |",
        "|---|---|---|---|---|---|---|",
    ]
    for link in links:
        ours = statistics.median(times.get((link, "crds-s3-sync"), [float("nan")]))
        for tool in tools:
            runs = times.get((link, tool))
            if not runs:
                continue
            median = statistics.median(runs)
            lines.append(
                f"| {link} | {tool} | {len(runs)} | {median:.1f} | {min(runs):.1f}-{max(runs):.1f}"
                f" | {n / median:.0f} | {median / ours:.2f} |"
            )
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
