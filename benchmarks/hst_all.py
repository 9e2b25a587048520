"""Every HST context from its pickle: `crds-s3-sync --all` against rclone given the keys.

HST's buckets hold each context as one pickle (`pickles/hst/<context>.pkl`, crds's
`pickle.dumps` of the fully loaded context) and no mapping files. This builds such a
bucket from the real rules: every context of `../shared/crds-cache-test` beside the
repository that crds can load (else the three of tests/data), pickled by crds itself
(made once, kept under `.data/hst-all/`), every reference they name as a tiny
synthetic file (64 to 512 B) whose size and SHA-1 go into the bucket's server_config.
nginx serves it on 127.0.0.1 (plain HTTP, path-style; the one listing answer lists
the pickles). Timed, tools alternating, each writing to the disk (`bench.py`'s
destination, emptied and written back before each first run):

    crds-s3-sync --all        into an empty cache, then again with nothing to do
    rclone (64 transfers)     given every key (`--files-from --no-traverse`), then
                              again (skipping files of the same size and modtime)

with wall time, CPU time, peak RSS and, for crds-s3-sync, the peak PSS summed over
its processes. Needs crds (the test extra) to make the pickles, nginx and rclone.

    .venv/bin/python benchmarks/hst_all.py [--repeat 3] [--out benchmarks/results-hst.md]
"""

import argparse
import json
import os
import pprint
import statistics
import subprocess
import sys
from pathlib import Path

from bench import (
    BUCKET,
    FULL_RULES,
    PREFIX,
    RULES,
    WORK,
    Job,
    Run,
    clear_aside,
    context_serial,
    encode_metadata,
    file_system,
    load_average,
    measure,
    rclone_copy,
    read_server_config,
    start_nginx,
    tool_path,
    write_random,
)

from crds_s3_sync.errors import SyncError
from crds_s3_sync.rules.pickles import read_context_pickle

OBS = "hst"
ROOT = WORK / "hst-all"
SRV = ROOT / "srv"

# Run by crds's Python: argv[1] the pickles' directory, argv[2:] the contexts. Prints
# the contexts it pickled, one a line; one crds cannot load is left out.
MAKE_PICKLES = r"""
import os, pickle, sys
from crds.core import rmap

for context in sys.argv[2:]:
    if os.path.exists(f"{sys.argv[1]}/{context}.pkl"):  # made by an interrupted build
        print(context, flush=True)
        continue
    try:
        loaded = rmap.get_cached_mapping(context)
        loaded.force_load()
        data = pickle.dumps(loaded)
    except Exception:
        continue
    with open(f"{sys.argv[1]}/{context}.pkl", "wb") as out:
        out.write(data)
    print(context, flush=True)
"""


def key_dir(kind: str) -> Path:
    return SRV / BUCKET / PREFIX / kind / OBS


def build() -> tuple[list[str], list[str], str]:
    """The bucket (made once); its contexts, every key under the bucket, and a note."""
    rules = FULL_RULES if (FULL_RULES / "config/hst/server_config").is_file() else RULES
    note = "every context of the shared rules" if rules == FULL_RULES else "tests/data's rules"
    stamp = ROOT / "built.json"
    if stamp.exists():
        built = json.loads(stamp.read_text())
        return built["contexts"], built["keys"], built["note"]
    config = read_server_config(rules / "config" / OBS / "server_config")
    contexts = sorted((m for m in config.mappings if m.endswith(".pmap")), key=context_serial)
    contexts = [c for c in contexts if (rules / "mappings" / OBS / c).is_file()]
    for kind in ("pickles", "references", "config"):
        key_dir(kind).mkdir(parents=True, exist_ok=True)
    crds_env = {
        **os.environ,
        "CRDS_PATH": str(rules),
        "CRDS_MODE": "local",
        "CRDS_SERVER_URL": "https://hst-crds-serverless.stsci.edu",  # no server: offline
        "CRDS_OBSERVATORY": OBS,
        "CRDS_READONLY_CACHE": "1",
    }
    made = subprocess.run(
        [sys.executable, "-c", MAKE_PICKLES, str(key_dir("pickles")), *contexts],
        env=crds_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    references: set[str] = set()
    refused = []
    for context in list(made):
        path = key_dir("pickles") / f"{context}.pkl"
        try:
            mappings = read_context_pickle(context, path.read_bytes(), context)
        except SyncError:  # an old context naming files by path: left out of the bucket
            refused.append(context)
            made.remove(context)
            path.unlink()
            continue
        for mapping in mappings:
            references.update(mapping.references)
    metadata = {
        name: meta for name, meta in config.metadata.items() if name.endswith("map")
    }  # the real mappings' size and SHA-1: crds's own config names them
    for i, ref in enumerate(sorted(references)):
        size = 64 + (i * 97) % 449
        metadata[ref] = (size, write_random(key_dir("references") / ref, size))
    server_config = {
        "observatory": OBS,
        "operational_context": made[-1],
        "mappings": sorted(n for n in metadata if n.endswith("map")),
        "bad_files_list": [],
        "download_metadata": encode_metadata(metadata),
    }
    (key_dir("config") / "server_config").write_text(pprint.pformat(server_config))
    listing = "".join(
        f"<Contents><Key>{PREFIX}/pickles/{OBS}/{c}.pkl</Key>"
        f"<Size>{(key_dir('pickles') / f'{c}.pkl').stat().st_size}</Size></Contents>"
        for c in made
    )
    (SRV / "listing.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
        f"<Name>{BUCKET}</Name><IsTruncated>false</IsTruncated>{listing}</ListBucketResult>"
    )
    keys = [f"pickles/{OBS}/{c}.pkl" for c in made]
    keys += [f"references/{OBS}/{r}" for r in sorted(references)]
    note = (
        f"{len(made)} of {len(contexts)} contexts pickled by crds ({note}); "
        f"{len(refused)} more naming files by path left out"
    )
    stamp.write_text(json.dumps({"contexts": made, "keys": keys, "note": note}))
    return made, keys, note


def ours(endpoint: str, job: Job) -> Run:
    job.watch = True
    command = [tool_path("crds-s3-sync"), "--bucket", BUCKET, "--prefix", PREFIX]
    command += ["--observatory", OBS, "--endpoint-url", endpoint, "--no-sign-request"]
    return measure([*command, "--cache", str(job.dest), "--quiet", "--all"], job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dest", type=Path, default=WORK / "dest")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results-hst.md")
    args = parser.parse_args()
    print(load_average(), flush=True)
    _, keys, note = build()
    key_file = ROOT / "keys.txt"
    key_file.write_text("\n".join(keys) + "\n")
    print(note, f"{len(keys):,} keys", flush=True)
    server, endpoints = start_nginx(SRV, ["http"], None, None)
    endpoint = endpoints["http"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CRDS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    runs: dict[str, list[Run]] = {}
    try:
        for repeat in range(args.repeat):
            order = ["crds-s3-sync", "rclone"] if repeat % 2 == 0 else ["rclone", "crds-s3-sync"]
            for tool in order:
                dest = args.dest / f"hst-{tool}"
                for rerun in (False, True):
                    job = Job(endpoint, dest, env, WORK / f"hst-{tool}.log", keep=rerun)
                    if tool == "rclone":
                        run = rclone_copy(job, key_file, rerun)
                    else:
                        run = ours(endpoint, job)
                    label = f"{tool} {'re-run' if rerun else 'first'}"
                    runs.setdefault(label, []).append(run)
                    print(
                        f"{label}: {run.seconds:.2f} s, peak {run.peak_mb:.0f} MB, "
                        f"PSS {run.pss_mb or 0:.0f} MB, CPU {run.cpu:.2f} s",
                        flush=True,
                    )
    finally:
        server.terminate()
        clear_aside()
    lines = [
        f"{load_average()}; {note}; {len(keys):,} files; destination on "
        f"{file_system(args.dest)}; medians of {args.repeat}, tools alternating.",
        "",
        "| run | wall s (median) | range | CPU s | peak RSS MB | peak PSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for label, done in runs.items():
        times = [r.seconds for r in done]
        pss = [r.pss_mb for r in done if r.pss_mb]
        lines.append(
            f"| {label} | {statistics.median(times):.2f} | {min(times):.2f}-{max(times):.2f} "
            f"| {statistics.median(r.cpu for r in done):.2f} "
            f"| {max(r.peak_mb for r in done):.0f} | {f'{max(pss):.0f}' if pss else '-'} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
