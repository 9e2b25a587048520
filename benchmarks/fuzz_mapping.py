"""Fuzz the mapping parser: mutated real mappings and random text, for a while.

Not part of the test suite (it runs for a minute or more). Every input must
either parse or be refused with a SyncError; anything else is a crash, printed
with the input that caused it, and the exit status is 1.

    .venv/bin/python benchmarks/fuzz_mapping.py --seconds 60
"""

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

from crds_s3_sync.errors import SyncError
from crds_s3_sync.rules.mapping import parse_mapping

RULES = Path(__file__).resolve().parent.parent / "tests" / "data" / "mappings"
TOKENS = [
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "'",
    '"',
    "\\",
    "\n",
    "#",
    "=",
    "*",
    "**",
    "Match(",
    "UseAfter(",
    "lambda",
    "__import__",
    "N/A",
    "../",
    "\x00",
    "\x1b",
    "9" * 50,
]


def mutate(text: str, rng: random.Random) -> str:
    """One of: flip characters, cut, splice in a token, duplicate a slice, or swap halves."""
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        how = rng.randrange(5)
        at = rng.randrange(len(chars) + 1)
        if how == 0 and chars:
            chars[min(at, len(chars) - 1)] = chr(rng.randrange(0x20, 0x7F))
        elif how == 1:
            chars = chars[:at]
        elif how == 2:
            chars[at:at] = rng.choice(TOKENS)
        elif how == 3 and chars:
            end = min(len(chars), at + rng.randrange(200))
            chars[at:at] = chars[at:end]
        else:
            chars = chars[at:] + chars[:at]
    return "".join(chars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    corpus = [(p.name, p.read_text()) for p in sorted(RULES.glob("*/*.?map"))]
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        name, text = rng.choice(corpus)
        if rng.random() < 0.1:
            text = "".join(chr(rng.randrange(0, 0x250)) for _ in range(rng.randrange(500)))
        else:
            text = mutate(text, rng)
        try:
            parse_mapping(name, text)
            outcomes["parsed"] += 1
        except SyncError:
            outcomes["refused"] += 1
        except Exception as exc:  # the finding this script exists for
            print(f"CRASH on {name}: {type(exc).__name__}: {exc}\n{text!r}", file=sys.stderr)
            sys.exit(1)
    total = sum(outcomes.values())
    print(
        f"{total:,} inputs in {args.seconds:.0f} s: {outcomes['parsed']:,} parsed, "
        f"{outcomes['refused']:,} refused with a clean error, 0 crashes"
    )


if __name__ == "__main__":
    main()
