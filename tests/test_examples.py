"""The examples/ run as written: their shell steps, through bash, against a local bucket."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import Bucket

EXAMPLES = Path(__file__).parent.parent / "examples"


def shell_env(bucket: Bucket, cache: Path, **extra: str) -> dict[str, str]:
    """What the examples' environment would say, pointed at the test bucket; the
    console script comes from the environment running the tests."""
    return os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CRDS_PATH": str(cache),
        "CRDS_OBSERVATORY": bucket.observatory,
        "CRDS_S3_BUCKET": bucket.name,
        "CRDS_S3_PREFIX": bucket.prefix,
        "AWS_ENDPOINT_URL": bucket.endpoint,
        **extra,
    }


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_github_workflow_keys_syncs_and_reuses_the_cache(make_bucket, tmp_path) -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions-crds-cache.yml").read_text())
    steps = workflow["jobs"]["test"]["steps"]
    ours = [s for s in steps if "crds-s3-sync" in s.get("run", "") and "pip" not in s["run"]]
    assert [s["name"] for s in ours] == [
        "Cache key of the contexts the tests use",
        "Sync what the cache lacks",
    ]
    key_step, sync_step = ours
    for uses in ("actions/cache/restore@v4", "actions/cache/save@v4"):
        cache_step = next(s for s in steps if s.get("uses") == uses)
        assert cache_step["with"]["key"] == f"${{{{ steps.{key_step['id']}.outputs.key }}}}"
        assert cache_step["with"]["path"] == "${{ env.CRDS_PATH }}"

    bucket = make_bucket("roman")
    cache = tmp_path / "crds_cache"
    output = tmp_path / "github_output"
    env = shell_env(bucket, cache, GITHUB_OUTPUT=str(output))

    def key() -> str:
        output.write_text("")
        done = bash(key_step["run"], env)
        assert done.returncode == 0, done.stderr
        (line,) = output.read_text().splitlines()
        assert line.startswith("key=crds-roman-flat-")
        return line

    first = key()
    assert not cache.exists()  # a cache key costs no download
    synced = bash(sync_step["run"], env)
    assert synced.returncode == 0, synced.stderr
    events = [json.loads(line) for line in synced.stderr.splitlines()]
    assert {e["event"] for e in events} >= {"planned", "downloaded"}
    # The next run: same key (the restored cache is reused), nothing to fetch.
    assert key() == first
    again = bash(sync_step["run"], env)
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stderr.splitlines()]
    planned = [e["event"] for e in events].index("planned")
    assert {e["event"] for e in events[:planned]} == {"note"}
    assert {e["event"] for e in events[planned + 1 : -1]} == {"skipped"}
    assert events[-1]["event"] == "summary" and events[-1]["downloaded"] == 0


def test_the_slurm_array_fills_one_cache_from_concurrent_shards(make_bucket, tmp_path) -> None:
    script = EXAMPLES / "slurm-fill-shared-cache.sh"
    assert "#SBATCH --array=1-8" in script.read_text()
    bucket = make_bucket("roman")
    cache = tmp_path / "shared"
    tasks = [
        subprocess.Popen(
            ["bash", str(script)],
            env=shell_env(bucket, cache, SLURM_ARRAY_TASK_ID=str(k), SLURM_ARRAY_TASK_COUNT="3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2, 3)
    ]
    fetched: list[str] = []
    for task in tasks:
        _, err = task.communicate(timeout=300)
        assert task.returncode == 0, err
        events = [json.loads(line) for line in err.splitlines()]
        fetched += [e["name"] for e in events if e["event"] == "downloaded"]
    # Together the shards fetched the whole plan.
    check = bash("crds-s3-sync --last 3 --check --verify --json -q", shell_env(bucket, cache))
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["problems"] == []
    # Shards are disjoint but for server_config, which each needs: small files take
    # no lock, so two shards may both fetch it (README, Concurrent syncs).
    sharded = [name for name in fetched if name != "server_config"]
    assert sorted(sharded) == sorted(set(sharded))
    assert "server_config" in fetched
    assert len(set(fetched)) == report["files"]
