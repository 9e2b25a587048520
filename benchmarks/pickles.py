"""Reading an HST context pickle: crds-s3-sync's restricted reader against crds's own
`pickle.loads` plus `mapping_names()` and `reference_names()`.

The pickle is made here by crds from the real rules in tests/data (hst_0729, about
4 MB, as in HST's buckets). crds is imported before any timing, so only the reading
is compared. Needs the test extra (crds).
"""

import argparse
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RULES = Path(__file__).resolve().parent.parent / "tests" / "data"


def make_pickle(context: str, root: Path) -> bytes:
    shutil.copytree(RULES / "mappings" / "hst", root / "mappings" / "hst")
    shutil.copytree(RULES / "config" / "hst", root / "config" / "hst")
    os.environ.update(
        CRDS_PATH=str(root),
        CRDS_MODE="local",
        CRDS_SERVER_URL="https://hst-crds-serverless.stsci.edu",  # offline
        CRDS_OBSERVATORY="hst",
    )
    from crds.core import rmap

    loaded = rmap.get_cached_mapping(context)
    loaded.force_load()
    return pickle.dumps(loaded)


def timed(work: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", default="hst_0729.pmap")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from crds_s3_sync.rules.pickles import read_context_pickle

    with tempfile.TemporaryDirectory() as root:
        data = make_pickle(args.context, Path(root))

    def ours() -> tuple[list[str], list[str]]:
        mappings = read_context_pickle(args.context, data, args.context)
        references = {ref for mapping in mappings for ref in mapping.references}
        return sorted(m.name for m in mappings), sorted(references)

    def crds() -> tuple[list[str], list[str]]:
        loaded = pickle.loads(data)  # what `crds sync` does with a pickle from S3
        return sorted(loaded.mapping_names()), sorted(loaded.reference_names())

    ours_s, ours_names = timed(ours, args.repeat)
    crds_s, crds_names = timed(crds, args.repeat)
    if ours_names != crds_names:
        sys.exit("the two readers disagree: not a benchmark")
    mappings, references = ours_names
    print(
        f"{args.context}.pkl: {len(data) / 1e6:.1f} MB, {len(mappings)} mappings, "
        f"{len(references):,} references; medians of {args.repeat}\n\n"
        "| reader | seconds | ratio |\n|---|---|---|\n"
        f"| crds-s3-sync (restricted) | {ours_s:.3f} | {ours_s / crds_s:.2f} |\n"
        f"| crds: pickle.loads + mapping_names + reference_names | {crds_s:.3f} | 1.00 |"
    )


if __name__ == "__main__":
    main()
