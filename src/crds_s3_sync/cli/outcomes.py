"""What each action tells when it is done: its lines on stdout, its summary for
people on stderr, its JSON document and its exit status.

One class per action, so that each knows its own words and numbers; the
command only prints them. Counts are of this run: bytes fetched, not the size
of the plan; files found valid, not only those skipped by the transfer.
"""

from dataclasses import dataclass
from pathlib import Path

from rich.filesize import decimal

from ..rules.plans import FileSpec
from ..run.stages import Action, SyncOptions, SyncResult


@dataclass
class Outcome:
    result: SyncResult
    options: SyncOptions
    cache: Path

    def listing(self) -> list[str]:
        """Lines for stdout, one item each, for scripts (unless --json)."""
        return []

    def summary(self) -> list[str]:
        """Lines for people, on stderr."""
        return []

    def exit_code(self) -> int:
        return 1 if self.result.report.failed or self._unresolved() else 0

    def document(self) -> dict[str, object]:
        """The --json document: the run's numbers, and what the action found."""
        result, report = self.result, self.result.report
        return (
            {
                "contexts": result.contexts,
                "key": result.key,
                "files": len(result.plan),
                "bytes": _size(result.plan),
                "downloaded": report.downloaded,
                "skipped": report.skipped,
                "fetched_bytes": report.fetched_bytes,
                "failed": report.failed,
                "unverified": report.unverified,
                "retries": report.retries,
                "resumed_bytes": report.resumed_bytes,
                "seconds": round(result.seconds, 3),
                "exit": self.exit_code(),
            }
            | ({"purged": self._purged()} if self.options.purge else {})
            | self._datasets()
        )

    def _datasets(self) -> dict[str, object]:
        """--datasets: crds's answer for each dataset, by context."""
        if not self.options.datasets:
            return {}
        answers: dict[str, dict[str, object]] = {}
        for choice in self.result.datasets:
            answers.setdefault(choice.dataset, {})[choice.context] = choice.as_json()
        return {"datasets": answers}

    def _unresolved(self) -> list[str]:
        """A line per dataset and type crds found no file for (beyond "n/a")."""
        return [
            f"{choice.dataset}: {kind} under {choice.context}: {error}"
            for choice in self.result.datasets
            for kind, error in choice.unresolved()
        ]

    def _chosen(self) -> list[str]:
        """A line per dataset and context: the references crds chose."""
        lines = []
        for choice in self.result.datasets:
            if isinstance(choice.references, dict):
                names = [f"{k}={v}" for k, v in sorted(choice.as_json().items()) if v != "n/a"]
                lines.append(f"{choice.dataset} {choice.context}: {' '.join(names)}")
        return lines

    def _purged(self) -> list[str]:
        return [str(path.relative_to(self.cache)) for path in self.result.purged]

    def _purge_line(self) -> list[str]:
        """After a sync or repair that also purged (crds sync's --purge-* spellings)."""
        if not self.options.purge:
            return []
        verb = "Would remove" if self.options.dry_run else "Removed"
        kinds = " and ".join(f"{kind.value}s" for kind in self.options.purge)
        return [f"{verb} {len(self.result.purged)} {kinds} no selected context needs"]

    def _contexts(self) -> str:
        contexts = self.result.contexts
        if len(contexts) > 4:
            return f"{len(contexts)} contexts ({contexts[0]} .. {contexts[-1]})"
        return ", ".join(contexts)

    def failures(self) -> list[str]:
        """A line per failed file, naming it once (most errors name it already), for
        people, after the summary."""
        lines = [f"not found: {line}" for line in self._unresolved()]
        for failure in self.result.report.failed:
            name, error = failure["name"], failure["error"]
            lines.append(f"failed: {error}" if name in error else f"failed: {name}: {error}")
        return lines

    def _fetched(self) -> str:
        report, seconds = self.result.report, self.result.seconds
        rate = f", {decimal(int(report.fetched_bytes / seconds))}/s" if seconds else ""
        return f"{decimal(report.fetched_bytes)} fetched in {seconds:.1f} s{rate}"


class Synced(Outcome):
    def summary(self) -> list[str]:
        report = self.result.report
        lines = [
            f"Synced {self._contexts()} into {self.cache}: {report.downloaded} downloaded, "
            f"{report.skipped} already valid, {len(report.failed)} failed, "
            f"{report.retries} retries; {self._fetched()}"
        ]
        if report.unverified:
            lines.append(
                f"{len(report.unverified)} files had no SHA-1 in server_config and were "
                f"checked by size only: {', '.join(report.unverified[:5])}"
            )
        return lines + self._purge_line()


class Planned(Outcome):
    """A dry run of a sync: what it would fetch (the missing and corrupt files)."""

    def listing(self) -> list[str]:
        return self._chosen() + [problem.spec.path for problem in self.result.problems]

    def summary(self) -> list[str]:
        fetch = [problem.spec for problem in self.result.problems]
        valid = len(self.result.plan) - len(fetch)
        return [
            f"Plan for {self._contexts()}: {len(self.result.plan)} files, "
            f"{decimal(_size(self.result.plan))}; {len(fetch)} to download "
            f"({decimal(_size(fetch))}), {valid} already valid; nothing written (dry run)"
        ]

    def document(self) -> dict[str, object]:
        return {
            **super().document(),
            "plan": [spec.as_json() for spec in self.result.plan],
            "to_download": [problem.as_json() for problem in self.result.problems],
        }


class Keyed(Outcome):
    def listing(self) -> list[str]:
        return [self.result.key]

    def exit_code(self) -> int:
        """The key stands whatever crds found no file for (said on stderr): a CI
        job's `key=$(crds-s3-sync --print-key ...)` must not fail for it."""
        return 0

    def document(self) -> dict[str, object]:
        return {**super().document(), "plan": [spec.as_json() for spec in self.result.plan]}


class Checked(Outcome):
    def listing(self) -> list[str]:
        return [f"{p.kind} {p.spec.path} ({p.detail})" for p in self.result.problems]

    def summary(self) -> list[str]:
        problems = self.result.problems
        missing = sum(problem.kind == "missing" for problem in problems)
        how = "size and SHA-1" if self.options.transfer.verify else "size"
        return [
            f"Checked {len(self.result.plan)} files by {how}: {missing} missing, "
            f"{len(problems) - missing} corrupt"
        ]

    def exit_code(self) -> int:
        return 1 if self.result.problems or self._unresolved() else 0

    def document(self) -> dict[str, object]:
        return {**super().document(), "problems": [p.as_json() for p in self.result.problems]}


class Repaired(Checked):
    """A check, then a fetch of exactly what it found (nothing, with --dry-run)."""

    def summary(self) -> list[str]:
        if self.options.dry_run:
            return super().summary()
        report, found = self.result.report, len(self.result.problems)
        return [
            f"Repaired {self._contexts()} in {self.cache}: {found} of "
            f"{len(self.result.plan)} files missing or corrupt, {report.downloaded} fetched, "
            f"{len(report.failed)} failed; {len(self.result.plan) - found} already valid; "
            f"{self._fetched()}",
            *self._purge_line(),
        ]

    def exit_code(self) -> int:
        if self.options.dry_run:
            return super().exit_code()
        return Outcome.exit_code(self)


class Purged(Outcome):
    def listing(self) -> list[str]:
        return self._purged()

    def summary(self) -> list[str]:
        verb = "Would remove" if self.options.dry_run else "Removed"
        return [f"{verb} {len(self.result.purged)} files the selection does not need"]

    def document(self) -> dict[str, object]:
        return {**super().document(), "purged": self._purged()}


def outcome_of(result: SyncResult, options: SyncOptions, cache: Path) -> Outcome:
    kinds: dict[Action, type[Outcome]] = {
        Action.sync: Planned if options.dry_run else Synced,
        Action.key: Keyed,
        Action.check: Checked,
        Action.repair: Repaired,
        Action.purge: Purged,
    }
    return kinds[options.action](result, options, cache)


def _size(specs: list[FileSpec]) -> int:
    return sum(spec.size or 0 for spec in specs)
