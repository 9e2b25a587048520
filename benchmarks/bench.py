"""Throughput benchmark: crds-s3-sync against s5cmd, the AWS CLI and crds_s3_get.

Every tool downloads the same objects from the same local server (nginx on
127.0.0.1 serving a directory as path-style /<bucket>/<key>, with a
pre-rendered ListObjectsV2 answer for `aws s3 sync`), runs alternate, and each
case reports the median wall time, throughput, files per second, peak memory
and the ratio to s5cmd. moto stays the test suite's server: it is too slow to
tell fast clients apart.

Cases (see `build_case`): realistic (the last 5 JWST contexts, real sizes / 200,
clamped to [512 B, 64 MiB]), small (5,000 files of 2-8 KiB), large (one 2 GiB
file). Run: `make bench`, or `python benchmarks/bench.py --help`.
"""

import argparse
import hashlib
import json
import os
import pprint
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from crds_s3_sync.demo import encode_metadata
from crds_s3_sync.server_config import parse_server_config
from crds_s3_sync.walker import walk

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "tests" / "data"
WORK = HERE / ".data"
BUCKET, PREFIX, OBS = "bench", "crds", "jwst"
JWST_LAST_5 = [f"jwst_{n:04d}.pmap" for n in range(537, 542)]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEST = Path("/dev/shm/crds-bench") if Path("/dev/shm").is_dir() else WORK / "dest"


@dataclass
class Case:
    name: str
    contexts: list[str]
    files: dict[str, bytes | int] = field(default_factory=dict)  # mapping bytes or ref size
    root: Path = WORK

    @property
    def srv(self) -> Path:
        return self.root / self.name / "srv"

    def key_dir(self, kind: str) -> Path:
        return self.srv / BUCKET / PREFIX / kind / OBS


# -- building the served objects ---------------------------------------------------------


def realistic(scale: int) -> Case:
    config = parse_server_config((RULES / "config/jwst/server_config").read_text(), "jwst")

    async def fetch(name: str) -> bytes:
        return (RULES / "mappings/jwst" / name).read_bytes()

    walked = anyio.run(walk, JWST_LAST_5, fetch, 16)
    case = Case("realistic", JWST_LAST_5, dict(walked.mapping_bytes))
    for ref in walked.references:
        real = config.metadata[ref].size if ref in config.metadata else 512 * scale
        case.files[ref] = min(max(real // scale, 512), 64 * MiB)
    return case


def synthetic(name: str, sizes: dict[str, int]) -> Case:
    """One context, one instrument, one rmap naming `sizes`' files."""
    rmap = "jwst_nircam_bench_0001.rmap"
    entries = "".join(f"    ('{i}',) : '{ref}',\n" for i, ref in enumerate(sizes))
    mappings = {
        "jwst_0001.pmap": "header = {'mapping': 'PIPELINE', 'observatory': 'JWST'}\n"
        "selector = {'NIRCAM': 'jwst_nircam_0001.imap'}\n",
        "jwst_nircam_0001.imap": "header = {'instrument': 'NIRCAM'}\n"
        f"selector = {{'BENCH': '{rmap}'}}\n",
        rmap: f"header = {{'instrument': 'NIRCAM'}}\nselector = Match({{\n{entries}}})\n",
    }
    case = Case(name, ["jwst_0001.pmap"], {k: v.encode() for k, v in mappings.items()})
    case.files.update(sizes)
    return case


def build_case(name: str, scale: int) -> Case:
    if name == "realistic":
        case = realistic(scale)
    elif name == "small":
        case = synthetic(
            name,
            {
                f"jwst_nircam_small_{i:05d}.fits": 2 * KiB + (i * 613) % (6 * KiB)
                for i in range(5000)
            },
        )
    else:
        case = synthetic(name, {"jwst_nircam_large_0001.fits": 2 * GiB})
    stamp = case.root / name / "built.json"
    wanted = {n: (v if isinstance(v, int) else len(v)) for n, v in case.files.items()}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return case
    shutil.rmtree(case.root / name, ignore_errors=True)
    metadata = {}
    for kind in ("mappings", "references", "config"):
        case.key_dir(kind).mkdir(parents=True)
    for file, content in case.files.items():
        if isinstance(content, bytes):
            path = case.key_dir("mappings") / file
            path.write_bytes(content)
            metadata[file] = (len(content), hashlib.sha1(content).hexdigest())
        else:
            metadata[file] = (content, write_random(case.key_dir("references") / file, content))
    config = {
        "observatory": OBS,
        "operational_context": case.contexts[-1],
        "mappings": sorted(n for n, v in case.files.items() if isinstance(v, bytes)),
        "bad_files_list": [],
        "download_metadata": encode_metadata(metadata),
    }
    (case.key_dir("config") / "server_config").write_text(pprint.pformat(config))
    write_listing(case)
    stamp.write_text(json.dumps(wanted))
    return case


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha1()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MiB))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def write_listing(case: Case) -> None:
    """The one ListObjectsV2 answer `aws s3 sync` needs: every reference, one page."""
    prefix = f"{PREFIX}/references/{OBS}/"
    items = "".join(
        f"<Contents><Key>{prefix}{p.name}</Key><Size>{p.stat().st_size}</Size>"
        "<LastModified>2025-01-01T00:00:00.000Z</LastModified>"
        # nginx's own ETag, which the AWS CLI sends back in If-Match for ranged GETs.
        f"<ETag>&quot;{int(p.stat().st_mtime):x}-{p.stat().st_size:x}&quot;</ETag>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        for p in sorted(case.key_dir("references").iterdir())
    )
    (case.srv / "listing.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>{BUCKET}</Name><Prefix>{prefix}</Prefix><KeyCount>{len(case.files)}</KeyCount>"
        f"<MaxKeys>100000</MaxKeys><IsTruncated>false</IsTruncated>{items}</ListBucketResult>"
    )


# -- the server ----------------------------------------------------------------------------


def start_nginx(srv: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    conf = srv.parent / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 2; pid {srv.parent}/nginx.pid; error_log stderr error;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path {srv.parent}/tmp; proxy_temp_path {srv.parent}/tmp;
  fastcgi_temp_path {srv.parent}/tmp; uwsgi_temp_path {srv.parent}/tmp;
  scgi_temp_path {srv.parent}/tmp;
  server {{
    listen 127.0.0.1:{port}; root {srv};
    location = /{BUCKET} {{ try_files /listing.xml =404; }}
    location / {{ }}
  }}
}}""")
    (srv.parent / "tmp").mkdir(exist_ok=True)
    server = subprocess.Popen(["nginx", "-p", str(srv.parent), "-c", str(conf)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the tools -----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_mb: float
    files: int
    bytes: int


def measure(command: list[str], env: dict[str, str], dest: Path, quiet: bool = True) -> Run:
    """Wall time and peak RSS of one command (and the children it waited for)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.sync()  # the last run's writeback must not land on this one's clock
    log = WORK / f"{dest.name}.log"
    with log.open("w") as errors:
        start = time.perf_counter()
        process = subprocess.Popen(
            [tool_path(command[0]), *command[1:]],
            env=env,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=errors,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[0]} failed: {log.read_text()[-2000:]}")
    files = [p for p in dest.rglob("*") if p.is_file()]
    return Run(seconds, usage.ru_maxrss / 1024, len(files), sum(p.stat().st_size for p in files))


def tool_path(name: str) -> str:
    """This environment's copy first (make bench installs the tools there), then PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name) or name


def ours(case: Case, endpoint: str, dest: Path, env: dict) -> Run:
    contexts = [arg for name in case.contexts for arg in ("--context", name)]
    return measure(
        [
            "crds-s3-sync",
            "--bucket",
            BUCKET,
            "--prefix",
            PREFIX,
            "--observatory",
            OBS,
            "--endpoint-url",
            endpoint,
            "--no-sign-request",
            "--cache",
            str(dest),
            "--quiet",
            *contexts,
        ],
        env,
        dest,
    )


def s5cmd(case: Case, endpoint: str, dest: Path, env: dict) -> Run:
    return measure(s5cmd_command(case, endpoint, dest), env, dest)


def s5cmd_sha1sum(case: Case, endpoint: str, dest: Path, env: dict) -> Run:
    """s5cmd, then sha1sum on both cores: what verifying costs a tool that does not."""
    command = shlex.join(s5cmd_command(case, endpoint, dest))
    check = f"find {shlex.quote(str(dest))} -type f -print0 | xargs -0 -P 2 -n 64 sha1sum"
    return measure(["sh", "-c", f"{command} >/dev/null && {check}"], env, dest)


def s5cmd_command(case: Case, endpoint: str, dest: Path) -> list[str]:
    lines = [
        f"cp s3://{BUCKET}/{PREFIX}/{kind}/{OBS}/{name} {dest}/{kind}/{OBS}/{name}"
        for name, v in case.files.items()
        for kind in (["mappings"] if isinstance(v, bytes) else ["references"])
    ]
    commands = case.root / case.name / "s5cmd.txt"
    commands.write_text("\n".join(lines) + "\n")
    return [
        tool_path("s5cmd"),
        "--endpoint-url",
        endpoint,
        "--no-sign-request",
        "--numworkers",
        "64",
        "run",
        str(commands),
    ]


def aws(case: Case, endpoint: str, dest: Path, env: dict) -> Run:
    return measure(
        [
            "aws",
            "s3",
            "sync",
            f"s3://{BUCKET}/{PREFIX}/references/{OBS}/",
            str(dest / "references" / OBS),
            "--endpoint-url",
            endpoint,
            "--no-sign-request",
            "--only-show-errors",
        ],
        env,
        dest,
    )


def crds_s3_get(case: Case, endpoint: str, dest: Path, env: dict, sample: int = 24) -> Run:
    """As `crds sync` runs it: one process per file. Sampled, then scaled to the case."""
    refs = sorted(n for n, v in case.files.items() if isinstance(v, int))
    picked = refs[:: max(1, len(refs) // sample)][:sample]
    config = parse_server_config((case.key_dir("config") / "server_config").read_text(), "bench")
    total = Run(0.0, 0.0, 0, 0)
    for name in picked:
        meta = config.metadata[name]
        run = measure(
            [
                "crds_s3_get",
                f"s3://{BUCKET}/{PREFIX}/references/{OBS}/{name}",
                "-d",
                str(dest / name),
                "-s",
                str(meta.size),
                "-c",
                meta.sha1,
            ],
            env | {"AWS_ENDPOINT_URL": endpoint},
            dest,
        )
        total = Run(
            total.seconds + run.seconds,
            max(total.peak_mb, run.peak_mb),
            total.files + run.files,
            total.bytes + run.bytes,
        )
    factor = len(refs) / len(picked)  # mappings are left out: a handful, and tiny
    return Run(
        total.seconds * factor, total.peak_mb, int(total.files * factor), int(total.bytes * factor)
    )


TOOLS = {
    "crds-s3-sync": ours,
    "s5cmd": s5cmd,
    "s5cmd+sha1sum": s5cmd_sha1sum,
    "aws": aws,
    "crds_s3_get": crds_s3_get,
}


# -- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="realistic,small,large")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=200)
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEST,
        help="where tools write (default: tmpfs, so the disk adds no noise)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if Path(tool_path(t.partition("+")[0])).exists()]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = os.environ | {
        "PATH": path,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(WORK / "aws-config"),
    }
    WORK.mkdir(exist_ok=True)
    (WORK / "aws-config").write_text("[default]\ns3 =\n  max_concurrent_requests = 64\n")
    report = [
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d')}. Medians of {args.repeat} runs, tools alternating.\n"
    ]
    for name in args.cases.split(","):
        case = build_case(name, args.scale)
        server, endpoint = start_nginx(case.srv)
        try:
            runs: dict[str, list[Run]] = {tool: [] for tool in tools}
            for repeat in range(args.repeat):
                order = tools[repeat % len(tools) :] + tools[: repeat % len(tools)]
                for tool in order:
                    if tool == "crds_s3_get" and repeat > 0:
                        continue  # sampled and scaled: one pass is enough
                    run = TOOLS[tool](case, endpoint, args.dest / tool, env)
                    runs[tool].append(run)
                    print(
                        f"{name} {tool}: {run.seconds:.2f} s, {run.files} files, "
                        f"{run.bytes / MiB:.0f} MiB, peak {run.peak_mb:.0f} MB",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait()
        report.append(table(case, runs))
    args.out.write_text("\n".join(report))
    print("\n".join(report))


def table(case: Case, runs: dict[str, list]) -> str:
    medians = {tool: statistics.median(r.seconds for r in rs) for tool, rs in runs.items() if rs}
    base = medians.get("s5cmd")
    total = sum(v if isinstance(v, int) else len(v) for v in case.files.values())
    rows = [
        f"\n### {case.name}: {len(case.files)} files, {total / MiB:,.0f} MiB\n",
        "| tool | wall s (median) | MiB/s | files/s | peak RSS MB | time / s5cmd |",
        "|---|---|---|---|---|---|",
    ]
    for tool, seconds in medians.items():
        peak = max(r.peak_mb for r in runs[tool])
        ratio = f"{seconds / base:.2f}" if base else "-"
        note = " (sampled, scaled)" if tool == "crds_s3_get" else ""
        rows.append(
            f"| {tool}{note} | {seconds:.2f} | {total / MiB / seconds:,.0f} | "
            f"{len(case.files) / seconds:,.0f} | {peak:.0f} | {ratio} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
