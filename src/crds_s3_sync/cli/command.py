"""The command's outer shell: whatever goes wrong, one line and an exit code that says what.

Exit codes: 0 done; 1 files failed or problems found; 2 a mistake in how the tool
was called or configured (usage errors included: one line in the tool's own
words, not a framed box); 3 a fault of the tool itself, reported as one line
saying where its traceback was written (`--debug` prints it instead); 130, 143
and 129 interrupted by Ctrl-C, SIGTERM and SIGHUP.
"""

import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperCommand

PROGRAM = "crds-s3-sync"
USAGE, INTERNAL = 2, 3
# Options that take every value up to the next option
VARIADIC = ("--contexts", "--datasets", "--dataset-files")


class OneLineCommand(TyperCommand):
    """Typer's command, with its usage errors and any unexpected exception turned
    into one line on stderr and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = spread(list(sys.argv[1:] if args is None else args), VARIADIC)
        message = None
        try:
            code = super().main(argv, prog_name or PROGRAM, complete_var, False, **extra)
        except typer.TyperException as exc:  # click's usage errors: a bad flag or value
            message = f"error: {in_our_words(exc.format_message())} (see {PROGRAM} --help)"
            code = getattr(exc, "exit_code", USAGE)
        except typer.Abort:
            code = 130
        except Exception as exc:  # the tool's own fault: said, kept, exit 3
            message, code = internal_error(exc, "--debug" in argv), INTERNAL
        if message:
            say(message)
            if "--json" in argv:  # stdout holds one JSON document whatever happened
                error = message.removeprefix("error: ")
                print(json.dumps({"error": error, "exit": code}, indent=1))
        if not standalone_mode:
            return code
        sys.exit(code or 0)


# Typer's validation speaks pydantic; the tool speaks plainly.
_WORDING = [
    (r"Invalid value for '(--[\w-]+)': ", r"\1: "),
    (r"Input should be greater than or equal to ", "must be at least "),
    (r"Input should be less than or equal to ", "must be at most "),
    (r"Input should be a valid integer, unable to parse .*? integer", "not a whole number"),
    (r"Input should be a valid number, unable to parse .*? number", "not a number"),
    (r"Value error, ('[^']*') is not one of (.*?)\.?$", r"\1 is not one of \2"),
]


def in_our_words(message: str) -> str:
    """A usage error on one line, in the tool's words rather than the validator's."""
    message = " ".join(message.split())
    for pattern, replacement in _WORDING:
        message = re.sub(pattern, replacement, message)
    return message


def spread(argv: list[str], variadic: tuple[str, ...]) -> list[str]:
    """`--contexts A B C` (argparse's habit, and crds sync's) as click reads it:
    `--contexts A --contexts B --contexts C`. Click options take a fixed number of
    values."""
    out: list[str] = []
    option = None
    for arg in argv:
        if arg.startswith("-"):
            option = arg if arg in variadic else None
            out.append(arg)
        elif option and out[-1] != option:
            out += [option, arg]
        else:
            out.append(arg)
    return out


def internal_error(exc: BaseException, debug: bool) -> str:
    """The line for a fault of the tool; its traceback printed (`--debug`) or kept
    in a file that the line names, for a bug report."""
    text = "".join(traceback.format_exception(exc))
    if debug:
        sys.stderr.write(text)
        where = "above"
    else:
        fd, path = tempfile.mkstemp(prefix=f"{PROGRAM}-", suffix=".traceback")
        with os.fdopen(fd, "w") as file:
            file.write(text)
        where = f"in {path}"
    what = " ".join(str(exc).split())[:200]
    return f"internal error: {type(exc).__name__}: {what}; the traceback is {where} (report it)"


def say(line: str) -> None:
    sys.stderr.write(f"{PROGRAM}: {line}\n")
    sys.stderr.flush()
