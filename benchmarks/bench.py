"""Throughput benchmark: crds-s3-sync against s5cmd, rclone, the AWS CLI and crds_s3_get.

Every tool downloads the same objects from the same local server (nginx on
127.0.0.1 serving a directory as path-style /<bucket>/<key>, with a
pre-rendered ListObjectsV2 answer for `aws s3 sync`) onto the real disk (a
directory under benchmarks/.data; `--dest` elsewhere, e.g. /dev/shm), runs
alternate, and each case reports the median wall time, throughput, files per
second, peak memory and the ratios to s5cmd and to the fastest peer (`PEERS`)
over the same link. Before each timed run the last one's destination is removed
and its dirty pages written back (`settle`), untimed. moto stays the test
suite's server: it is too slow to tell fast clients apart.

Links (`--links`): plain HTTP; HTTPS with a test CA made once under
benchmarks/.data/tls (each tool is told to trust that CA by its own setting, `TRUST`);
and `far`, plain HTTP with every answer delayed 40 ms and each request capped at
100 MiB/s, as from another region (nginx's Lua module, `FAR`). A tool that fails is
reported as failed for that case and link.

Cases (see `build_case`): realistic (the last 5 JWST contexts, real sizes / 200,
clamped to [512 B, 64 MiB]), small (5,000 files of 2-8 KiB), large (one 2 GiB
file), many (every JWST context of the full rules in ../shared/crds-cache-test, with
references of 64-512 B) and rerun (many again into a complete copy each tool made
before, untimed: nothing to do). `--profile` adds, for the realistic case, where
crds-s3-sync's CPU time goes (py-spy, `PROFILE_RULES`). Run: `make bench`, or
`python benchmarks/bench.py --help`.
"""

import argparse
import ast
import base64
import functools
import gzip
import hashlib
import json
import linecache
import os
import pprint
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from local_nginx import Tls, free_port, make_tls, run_nginx

# All that this script takes from crds-s3-sync's own modules (whose layout changes):
# the walk from contexts down to references, which builds the realistic and many cases...
from crds_s3_sync.rules.walker import walk

# ...and, for the crds-s3-sync@N tools only, the CLI with its window of requests in flight
# starting at its ceiling, so --jobs N holds N in flight (run as `python -c`).
PINNED_MAIN = (
    "import sys, crds_s3_sync.engine.window as c; c.START = 1 << 20; "
    "from crds_s3_sync.cli.app import main; sys.argv[0] = 'crds-s3-sync'; main()"
)
PINNED = (32, 64, 128, 256)

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "tests" / "data"
# The full rules (every JWST context), beside the repository; the many case falls back to
# RULES (5 contexts) without them.
FULL_RULES = (HERE.parent / ".." / "shared" / "crds-cache-test").resolve()
WORK = HERE / ".data"
BUCKET, PREFIX, OBS = "bench", "crds", "jwst"
JWST_LAST_5 = [f"jwst_{n:04d}.pmap" for n in range(537, 542)]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEST = WORK / "dest"  # on the disk, as a cache is; --dest /dev/shm/... for tmpfs
LINKS = ("http", "https", "far")
CASES = ("realistic", "small", "large", "many", "rerun")
JOBS = 256  # crds-s3-sync's default --jobs (`crds-s3-sync --help`); s5cmd gets as many workers
S5CMD_WORKERS = (32, 64, 128)  # the s5cmd@N tools: --numworkers N
RCLONE_TRANSFERS = 64  # rclone's --transfers and --checkers
# What runs when --tools is not given.
DEFAULT_TOOLS = ("crds-s3-sync", "crds-s3-sync@no-fsync", "s5cmd", "s5cmd@64", "rclone", "aws")
# Before each timed run (untimed): sync, then wait until the kernel's dirty and
# under-writeback pages (/proc/meminfo) are below this, or SETTLE_WITHIN seconds have passed.
DIRTY_SETTLED = 32 * MiB
SETTLE_WITHIN = 60.0
TREE_EVERY = 0.02  # seconds between looks at crds-s3-sync's processes (PSS, CPU time)
# Each tool runs under GNU time, which reports its peak RSS: wait4's own ru_maxrss of a
# child is never less than the peak RSS of the process that started it (Linux keeps the
# larger when the child execs), so it would report ours for every tool smaller than that.
GNU_TIME = Path("/usr/bin/time")
WRAPPERS = ("time", "py-spy")  # programs run around a tool, whose processes are not the tool's
LOAD_WARNING = 1.0  # a 1-minute load average above this at the start is warned about
# The far link: what nginx does before each answer, and the modules that needs. Debian's
# libnginx-mod-http-lua first; else libnginx-mod-http-echo, whose echo_sleep then hands
# the request to a named location serving the file.
MODULES = Path("/usr/share/nginx/modules")
FAR_DELAY, FAR_RATE = 0.04, 100  # seconds before each answer; MiB/s for each request
FAR = {
    "lua": (
        ("ndk_http_module.so", "ngx_http_lua_module.so"),
        f"access_by_lua_block {{ ngx.sleep({FAR_DELAY}) }}",
    ),
    "echo": (("ngx_http_echo_module.so",), None),
}
# Where a shell (this machine's does) may point Python, Go, OpenSSL and botocore at the
# system's CAs. Children get none of these but the one their tool reads (TRUST), so a tool
# that ignores its own setting fails instead of passing on another's.
CA_VARIABLES = (
    "AWS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)

# -- where crds-s3-sync's CPU time goes (--profile) ----------------------------------------
#
# py-spy samples the run and the helpers it forks; each sample (one thread's stack) goes to
# the category of the first rule below whose pattern matches one of its frames
# (`re.search`), rules tried in this order. A pattern sees each frame as
# "qualname dir/file.py" (the function's qualified name, its file's last two path
# components), and the innermost frame also with ": " and its line of source, which says
# what C call the thread is in (hashlib, os.write, os.fsync...): a pattern holding ": "
# matches only there. Our own code is named by function and file name alone, never by
# package path: its modules move. An unmatched sample is "other"; under the table the
# innermost frames of "other" are listed, to extend this table from.
STARTUP = "start-up (imports, S3 client)"
PLANNING = "planning (mappings, plan, cache check)"
HTTP = "requests and responses (HTTP)"
HASHING = "hashing (SHA-1)"
WRITING = "writing (create, write, rename)"
FLUSHING = "flushing (fsync, syncfs)"
BOOKKEEPING = "bookkeeping (progress, events, indexes)"
OTHER = "other"
IDLE = "idle"  # waiting threads that py-spy took for running: left out


def _functions(*names: str) -> str:
    """A pattern for frames of these functions or classes (any part of the qualname)."""
    return rf"^(?:\S+\.)?(?:{'|'.join(names)})(?:\.\S+)? "


def _files(*names: str) -> str:
    """A pattern for frames in these files (last path component; regex allowed)."""
    return rf"^\S+ (?:\S+/)?(?:{'|'.join(names)})(?::|$)"


def _packages(*names: str) -> str:
    return rf"^\S+ (?:{'|'.join(names)})/"


PROFILE_RULES: list[tuple[str, str]] = [
    # Threads waiting (for a lock, for work): py-spy reads /proc/PID/stat as a sample is
    # taken, and a thread just woken or about to sleep still shows as running.
    (IDLE, _functions(r"Condition\.wait", r"Event\.wait", r"Queue\.get", "select", "poll")),
    (IDLE, r"^(?:_worker|WorkerThread\.run) \S+: .*\.get\("),
    # Imports wherever they happen; the S3 client and its TLS context, made once.
    (STARTUP, _functions("_find_and_load", "_call_with_frames_removed", "get_session")),
    (STARTUP, _functions(r"S3Source\._open", "verifying_context")),
    # Reading server_config, walking the mappings, building the plan, looking at the cache.
    (
        PLANNING,
        _functions(
            "read_server_config",
            "decode_server_config",
            "make_plan",
            r"last_plan\.load",
            "parse_server_config",
            "choose_contexts",
            "select_contexts",
            "walk",
            "walk_pickles",
            "MappingFetcher",
            "PickleFetcher",
            "parse_mapping",
            "build_plan",
            "cache_key",
            "shard",
            "_act",
            "_find_problems",
            r"MappingIndex\.load",
            r"VerifiedIndex\.load",
            "defect",
            r"Transfer\._is_valid",
        ),
    ),
    (
        PLANNING,
        _files(r"walker\.py", r"plans\.py", r"mapping\.py", r"server_config\.py", r"audit\.py"),
    ),
    # The C call the innermost frame is in, by its line of source.
    (HASHING, r": .*(?:sha1\(|hexdigest\(|digest\.update\()"),
    (FLUSHING, r": .*(?:fsync|syncfs|fdatasync)"),
    (WRITING, r": .*\bos\.(?:open|write|pwrite|writev|replace|rename|unlink|close|ftruncate)\("),
    (WRITING, r": .*\b(?:mkdir|makedirs)\("),
    # A C function handed straight to a worker thread (anyio's run_sync(digest.update, ...),
    # as a large file's parts are hashed in order): the thread's innermost frame is anyio's.
    (HASHING, r"^WorkerThread\.run \S+: .*context\.run\(func"),
    # The same by function, for the Python around those calls.
    (HASHING, _functions("hash_part", "check_received")),
    (
        FLUSHING,
        _functions(
            "_fsync", "_fsync_path", "flush_file_system", "flush_directories", "Batches", "settle"
        ),
    ),
    (
        WRITING,
        _functions(
            "write_all",
            "_write_all",
            "_write_verified",
            "temporary_name",
            r"PartialFile\.\w+",
            "discard_parts",
        ),
    ),
    # What the run tells and keeps: progress, a helper's events to the main process, the
    # indexes of verified files and mappings, the cache's config, locks, clearing up.
    (
        BOOKKEEPING,
        _functions(
            "Progress",
            r"\w*Progress\w*",
            "Ledger",
            "Events",
            r"Helper\.fetch",
            "_replay",
            "VerifiedIndex",
            "MappingIndex",
            "write_cache_config",
            "_remember",
            "sweep",
            "_check_room",
            "Locks",
            "RunFile",
        ),
    ),
    (
        BOOKKEEPING,
        _files(
            r"progress\.py",
            r"ledger\.py",
            r"views\.py",
            r"verified\.py",
            r"mapping_index\.py",
            r"locks\.py",
        ),
    ),
    # Requests and responses: aiohttp on the loop, http.client in bulk's threads, botocore
    # for HEADs and listings, our readers, addressing and window of requests in flight.
    (
        HTTP,
        _packages(
            "aiohttp",
            "aiohappyeyeballs",
            "yarl",
            "multidict",
            "http",
            "botocore",
            "aiobotocore",
            "urllib3",
        ),
    ),
    (HTTP, _files(r"socket\.py", r"ssl\.py", r"selector_events\.py", r"sslproto\.py")),
    (
        HTTP,
        _functions(
            r"S3Source\.(?:read|copy_into|_send|_sent|size|get_bytes|list_names|_botocore)",
            "BulkReader",
            "SmallReader",
            "Addresses",
            "Concurrency",
            "Window",
        ),
    ),
    # The innermost frame is the one that started the event loop: the thread is inside
    # uvloop (C), receiving and sending on sockets and running its callbacks.
    (HTTP, _functions("Runner", "run_forever", "run_until_complete") + r".*: "),
]
PYSPY_RATE = 100  # samples a second (py-spy record --rate)
PYSPY = ["record", "--nonblocking", "--subprocesses", "--full-filenames", "--format", "raw"]


@dataclass
class Case:
    name: str
    contexts: list[str]
    files: dict[str, bytes | int] = field(default_factory=dict)  # mapping bytes or ref size
    root: Path = WORK
    note: str = ""  # said under the case's heading
    bucket: str = ""  # the directory under root it is served from; default: its name
    rerun: bool = False  # each tool's destination already holds the case: time the no-op

    def __post_init__(self) -> None:
        self.bucket = self.bucket or self.name

    @property
    def srv(self) -> Path:
        return self.root / self.bucket / "srv"

    def key_dir(self, kind: str) -> Path:
        return self.srv / BUCKET / PREFIX / kind / OBS


# -- building the served objects ---------------------------------------------------------


@dataclass
class ServerConfig:
    """What the benchmark reads of a server_config: its mappings, and each file's size
    and SHA-1 from download_metadata."""

    mappings: list[str]
    metadata: dict[str, tuple[int, str]]


def read_server_config(path: Path) -> ServerConfig:
    """A server_config file: a Python literal whose download_metadata is CRDS's encoding
    (base64 of gzipped JSON, `encode_metadata`) or, as old servers sent it, a plain dict."""
    raw = ast.literal_eval(path.read_text())
    metadata = raw.get("download_metadata", {})
    if "crds_payload" in metadata:
        metadata = json.loads(gzip.decompress(base64.b64decode(metadata["crds_payload"])))
    return ServerConfig(
        list(raw.get("mappings", [])),
        {n: (int(m["size"]), str(m["sha1sum"])) for n, m in metadata.items()},
    )


def encode_metadata(metadata: dict[str, tuple[int, str]]) -> dict[str, str]:
    """download_metadata as CRDS encodes it (crds.client.proxy.crds_encode)."""
    payload = {n: {"size": str(size), "sha1sum": sha1} for n, (size, sha1) in metadata.items()}
    packed = gzip.compress(json.dumps(payload).encode())
    return {"crds_encoded": "1.0", "crds_payload": base64.b64encode(packed).decode()}


def context_serial(name: str) -> tuple[int, str]:
    """Contexts in the order of their serial numbers (jwst_0541.pmap -> 541)."""
    match = re.search(r"_(\d+)\.pmap$", name)
    return (int(match.group(1)) if match else -1, name)


def walk_rules(rules: Path, contexts: list[str]):
    """crds-s3-sync's own walk from `contexts` down to their mappings and references,
    over the mapping files under `rules`: what each case is built from."""

    async def fetch(name: str) -> bytes:
        return (rules / "mappings" / OBS / name).read_bytes()

    return anyio.run(walk, contexts, fetch, 16)


def realistic(scale: int) -> Case:
    config = read_server_config(RULES / "config" / OBS / "server_config")
    walked = walk_rules(RULES, JWST_LAST_5)
    case = Case("realistic", JWST_LAST_5, dict(walked.mapping_bytes))
    for ref in walked.references:
        real = config.metadata[ref][0] if ref in config.metadata else 512 * scale
        case.files[ref] = min(max(real // scale, 512), 64 * MiB)
    return case


def many(name: str) -> Case:
    """Every JWST context (each .pmap that server_config lists and the rules hold), with
    tiny references (64-512 B); the full rules if present, else the vendored five."""
    shown = os.path.relpath(FULL_RULES, HERE.parent)  # results name no machine's paths
    rules, note = FULL_RULES, f"every JWST context of {shown}"
    if not (rules / "config/jwst/server_config").is_file():
        rules = RULES
        note = f"{shown} not found: fell back to the vendored rules of tests/data"
    config = read_server_config(rules / "config" / OBS / "server_config")
    contexts = sorted(
        (
            m
            for m in config.mappings
            if m.endswith(".pmap") and (rules / "mappings" / OBS / m).is_file()
        ),
        key=context_serial,
    )
    walked = walk_rules(rules, contexts)
    case = Case(name, contexts, dict(walked.mapping_bytes), bucket="many", rerun=name == "rerun")
    case.note = f"{len(contexts)} contexts, {note}"
    for i, ref in enumerate(sorted(walked.references)):
        case.files[ref] = 64 + (i * 97) % 449
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
    elif name in ("many", "rerun"):
        case = many(name)
    elif name == "small":
        case = synthetic(
            name,
            {
                f"jwst_nircam_small_{i:05d}.fits": 2 * KiB + (i * 613) % (6 * KiB)
                for i in range(5000)
            },
        )
    elif name == "large":
        case = synthetic(name, {"jwst_nircam_large_0001.fits": 2 * GiB})
    else:
        raise SystemExit(f"--cases: no case {name!r}; any of {', '.join(CASES)}")
    stamp = case.root / case.bucket / "built.json"
    wanted = {n: (v if isinstance(v, int) else len(v)) for n, v in case.files.items()}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return case
    shutil.rmtree(case.root / case.bucket, ignore_errors=True)
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


def far_delay(where: Path) -> str:
    """How this machine's nginx can delay answers: "lua" or else "echo", the first whose
    modules `nginx -t` loads."""
    where.mkdir(parents=True, exist_ok=True)
    for how, (modules, _) in FAR.items():
        conf = where / f"probe-{how}.conf"
        conf.write_text(
            "".join(f"load_module {MODULES / m};\n" for m in modules)
            + f"pid {where}/probe.pid; error_log stderr error; events {{ }}\n"
        )
        probe = ["nginx", "-t", "-q", "-p", str(where), "-c", str(conf)]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return how
    raise SystemExit(
        "--links far: nginx cannot load a module to delay answers: "
        "apt-get install libnginx-mod-http-lua (or libnginx-mod-http-echo)"
    )


def start_nginx(
    srv: Path, links: list[str], tls: Tls | None, log: Path | None, delay: str | None = None
) -> tuple[subprocess.Popen, dict[str, str]]:
    """One nginx, one server per link, each with the same locations; HTTP/1.1 keep-alive
    on all (no http2). far, plain HTTP, waits FAR_DELAY before each answer (by `delay`, see
    `far_delay`) and sends each at FAR_RATE at most. The endpoint of each link."""
    ports = {link: free_port() for link in links}
    logging = f"access_log {log} bench;" if log else "access_log off;"
    # A directory is no key: 404 as from S3, not nginx's redirect to its index (rclone asks
    # whether the root it copies from is an object).
    plain = (
        f"location = /{BUCKET} {{ try_files /listing.xml =404; }} "
        "location / { try_files $uri =404; }"
    )
    far = f"limit_rate {FAR_RATE}m; {plain}"
    if delay == "lua":  # the access phase, before try_files and the static handler
        far = f"{FAR['lua'][1]} {far}"
    elif delay == "echo":  # echo_sleep is a content handler: sleep, then serve the file
        far = (
            f"limit_rate {FAR_RATE}m; "
            f"location = /{BUCKET} {{ echo_sleep {FAR_DELAY}; echo_exec @listing; }} "
            f"location / {{ echo_sleep {FAR_DELAY}; echo_exec @file; }} "
            "location @listing { try_files /listing.xml =404; } "
            "location @file { try_files $uri =404; }"
        )
    listen = {
        "http": lambda port: f"listen 127.0.0.1:{port};",
        "https": lambda port: (
            f"listen 127.0.0.1:{port} ssl; ssl_certificate {tls.cert}; "
            f"ssl_certificate_key {tls.key}; ssl_protocols TLSv1.2 TLSv1.3;"
        ),
        "far": lambda port: f"listen 127.0.0.1:{port};",
    }
    servers = "\n".join(
        f"  server {{ {listen[link](port)} root {srv}; {logging}\n"
        f"    {far if link == 'far' else plain} }}"
        for link, port in ports.items()
    )
    modules = "".join(f"load_module {MODULES / m};\n" for m in FAR[delay][0]) if delay else ""
    conf = srv.parent / "nginx.conf"
    conf.write_text(f"""{modules}
daemon off; worker_processes 2; pid {srv.parent}/nginx.pid; error_log stderr error;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  log_format bench '$connection $ssl_protocol $status $request_method $request_time '
                   '"$http_user_agent"';
  default_type application/octet-stream;
  client_body_temp_path {srv.parent}/tmp; proxy_temp_path {srv.parent}/tmp;
  fastcgi_temp_path {srv.parent}/tmp; uwsgi_temp_path {srv.parent}/tmp;
  scgi_temp_path {srv.parent}/tmp;
{servers}
}}""")
    (srv.parent / "tmp").mkdir(exist_ok=True)
    server = run_nginx(srv.parent, conf, list(ports.values()))
    scheme = {"https": "https"}
    return server, {
        link: f"{scheme.get(link, 'http')}://127.0.0.1:{port}" for link, port in ports.items()
    }


# -- the tools -----------------------------------------------------------------------------

# How each tool is told to trust the test CA on the https link: its own, documented setting
# (an environment variable, or a command-line option given Job.ca).
TRUST = {
    "crds-s3-sync": "AWS_CA_BUNDLE",  # as botocore reads it
    "s5cmd": "SSL_CERT_FILE",  # Go's crypto/x509 reads it on Linux
    "s5cmd-default": "SSL_CERT_FILE",
    "s5cmd+sha1sum": "SSL_CERT_FILE",
    "rclone": "--ca-cert",
    "aws": "AWS_CA_BUNDLE",
    "crds_s3_get": "AWS_CA_BUNDLE",  # read by the `aws s3 cp` it starts
}
# The program each tool row runs, where its name is not the program's.
PROGRAM = {"s5cmd-default": "s5cmd", "s5cmd+sha1sum": "s5cmd"}
# The tools with a mode that skips files already in place, for the rerun case (crds_s3_get
# is one process per file, which `crds sync` starts only for missing files; s5cmd+sha1sum
# would hash every file again, which crds-s3-sync, trusting sizes, does not).
RERUN = (
    "crds-s3-sync",
    "s5cmd",
    "s5cmd-default",
    *(f"s5cmd@{n}" for n in S5CMD_WORKERS),
    "rclone",
    "aws",
)
# The other tools that fetch a case's files in one process: "time / best peer" is to the
# fastest of them over the same link. s5cmd+sha1sum and crds_s3_get are not peers.
PEERS = ("s5cmd", "s5cmd-default", *(f"s5cmd@{n}" for n in S5CMD_WORKERS), "rclone", "aws")
UNTRUSTED = re.compile(
    r"certificate verify failed|CERTIFICATE_VERIFY_FAILED|unknown authority"
    r"|unable to get local issuer certificate|SSL validation failed",
    re.IGNORECASE,
)


@dataclass
class Run:
    seconds: float
    peak_mb: float  # the largest peak RSS of one process (wait4 of it and its children)
    files: int
    bytes: int
    cpu: float = 0.0  # user + system seconds of the process and the children it waited for
    pss_mb: float | None = None  # crds-s3-sync's: peak PSS summed over its process tree
    settled: float = 0.0  # seconds waited before the run for the last one's writeback
    tree: "TreeWatch | None" = None


@dataclass
class Job:
    """Where one run of one tool fetches from and writes to, with what environment."""

    endpoint: str
    dest: Path
    env: dict[str, str]
    log: Path  # the tool's stderr
    timeout: float = 600.0  # for each process started, then it is killed and the run failed
    ca: Path | None = None  # on https, the test CA, for a tool told so by a command-line option
    keep: bool = False  # leave what dest holds (the rerun case); else it starts empty
    watch: bool = False  # sample the PSS of the process tree (crds-s3-sync's runs)


class ToolFailed(Exception):
    """A tool exited non-zero: why, in a few words, for the table."""


def dirty_bytes() -> int:
    """Dirty + Writeback of /proc/meminfo: page cache the kernel has yet to write back."""
    total = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(("Dirty:", "Writeback:")):
                total += int(line.split()[1]) * KiB
    return total


SET_ASIDE = ".set-aside"  # finished runs' destinations, deleted when the benchmark ends
ASIDE: set[Path] = set()


ASIDE_FROM = 100  # files in a destination, from which it is set aside, not deleted


def set_aside(path: Path) -> None:
    """Move a finished run's destination (of many files) out of the way, to be deleted
    when the benchmark ends (`clear_aside`). On this machine's ext4 disk, creating files soon
    after deleting thousands costs about 0.8 ms an `openat` (the allocator passes over
    inodes freed in the last minute or more): deleting between runs put that on the
    next run's clock, whichever tool it was."""
    few = sum(1 for _ in zip(path.rglob("*"), range(ASIDE_FROM), strict=False)) < ASIDE_FROM
    if path.exists() and few:
        shutil.rmtree(path)  # a few files, big ones: deleted now, or they fill the disk
    elif path.exists():
        aside = path.parent / SET_ASIDE
        aside.mkdir(exist_ok=True)
        ASIDE.add(aside)
        path.rename(aside / f"{path.name}-{time.monotonic_ns()}")


def clear_aside() -> None:
    for aside in ASIDE:
        shutil.rmtree(aside, ignore_errors=True)
    ASIDE.clear()


def settle() -> float:
    """Untimed, before each timed run: what earlier runs wrote (and removing it) written
    back, so the kernel's writeback does not land on this run's clock. `sync`, then wait
    for Dirty + Writeback below DIRTY_SETTLED (other processes write too), at most
    SETTLE_WITHIN seconds. Returns the seconds it took."""
    start = time.perf_counter()
    os.sync()
    while dirty_bytes() > DIRTY_SETTLED:
        if time.perf_counter() - start > SETTLE_WITHIN:
            print(
                f"warning: {dirty_bytes() / MiB:.0f} MiB still dirty or under writeback after "
                f"{SETTLE_WITHIN:.0f} s; running anyway",
                flush=True,
            )
            break
        time.sleep(0.05)
        os.sync()
    return time.perf_counter() - start


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class TreeWatch(threading.Thread):
    """Every TREE_EVERY seconds while a run goes on: the PSS of each process of its tree
    (/proc/PID/smaps_rollup), summed, and each process's CPU time so far (/proc/PID/stat).
    PSS divides each shared page among the processes sharing it, so the sum over a forked
    tree counts the pages the fork shares once (peak RSS counts them in every process).
    Processes of WRAPPERS (GNU time, py-spy) are not counted, only what runs under them."""

    def __init__(self, root: int, pss: bool = True) -> None:
        super().__init__(daemon=True)
        self.root, self.pss = root, pss
        self.parent: dict[int, int] = {root: 0}  # the tree as found so far: pid -> parent
        self.listed: set[int] = set()  # the pids in /proc at the last look for children
        self.counted: dict[int, bool] = {}  # pid -> not a wrapper, once it has exec'd
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds at its last look
        self.wrappers_cpu: dict[int, float] = {}  # the same for wrappers' processes
        self.peak_pss = 0  # bytes
        self.done = threading.Event()
        with open("/proc/self/cmdline", "rb") as ours:
            self.ours = ours.read()  # a child not yet past its exec still reads so

    def run(self) -> None:
        looks = 0
        while True:
            if looks % 5 == 0:  # new processes are rare: look for them every 5th time
                self._find_children()
            looks += 1
            pss = 0
            for pid in list(self.parent):
                counts = self._counts(pid)
                if counts is None:
                    continue
                self._cpu(pid, self.cpu if counts else self.wrappers_cpu)
                if counts and self.pss:
                    pss += self._pss(pid)
            self.peak_pss = max(self.peak_pss, pss)
            if self.done.wait(TREE_EVERY):
                return

    def stop(self) -> None:
        self.done.set()
        self.join()

    def tops(self) -> list[int]:
        """The counted processes started by a wrapper (or by us): the tool's own."""
        return [p for p, parent in self.parent.items() if p in self.cpu and parent not in self.cpu]

    def _counts(self, pid: int) -> bool | None:
        """Whether `pid` is the tool's (False: a wrapper's; None: not yet known)."""
        if pid not in self.counted:
            cmdline = _cmdline(pid)
            if not cmdline or cmdline == self.ours:
                return None  # gone, or not yet past its exec
            program = Path(cmdline.split(b"\0")[0].decode(errors="replace")).name
            self.counted[pid] = program not in WRAPPERS
        return self.counted[pid]

    def _find_children(self) -> None:
        """Processes whose parent is in the tree, among those new since the last look
        (all, the first time): pids wrap around (at 32768 here), so a child's may be
        smaller than its parent's."""
        listed = {int(n) for n in os.listdir("/proc") if n.isdigit()}
        parents = {}
        for pid in listed - self.listed - self.parent.keys():
            stat = _stat(pid)
            if stat:
                parents[pid] = int(stat[1])
        self.listed = listed
        while found := {p: parent for p, parent in parents.items() if parent in self.parent}:
            self.parent.update(found)  # and then their children, found in the same look
            parents = {p: parent for p, parent in parents.items() if p not in found}

    @staticmethod
    def _cpu(pid: int, into: dict[int, float]) -> None:
        stat = _stat(pid)
        if stat:  # fields 14 and 15 of /proc/PID/stat: utime and stime, in clock ticks
            into[pid] = (int(stat[11]) + int(stat[12])) / CLOCK_TICK

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
                for line in rollup:
                    if line.startswith(b"Pss:"):
                        return int(line.split()[1]) * KiB
        except (OSError, ValueError):
            pass
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def _stat(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from its third field (state, ppid, ...), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(b")") + 2 :].split()


def measure(command: list[str], job: Job, quiet: bool = True, env: dict | None = None) -> Run:
    """Wall time and peak RSS of one command (and the children it waited for); with
    `job.watch`, the peak PSS of its process tree too. Untimed before it: its destination
    emptied (unless `job.keep`) and the writeback of earlier runs waited for (`settle`)."""
    dest = job.dest
    if not job.keep:
        set_aside(dest)
    dest.mkdir(parents=True, exist_ok=True)
    settled = settle()
    argv = [tool_path(command[0]), *command[1:]]
    peak_file = job.log.with_name(job.log.name + ".rss")
    peak_file.unlink(missing_ok=True)
    if GNU_TIME.exists():  # its child's peak RSS, free of ours (`GNU_TIME`)
        argv = [str(GNU_TIME), "-f", "%M", "-o", str(peak_file), "--", *argv]
    with job.log.open("w") as errors:
        start = time.perf_counter()
        process = subprocess.Popen(
            argv,
            env=job.env | (env or {}),
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=errors,
            start_new_session=True,  # its own process group, to end with whatever it started
        )
        tree = None
        if job.watch:  # under py-spy (--profile): CPU time only
            tree = TreeWatch(process.pid, pss=Path(command[0]).name not in WRAPPERS)
            tree.start()
        # A tool that keeps retrying (s5cmd does, for each file) must not stall the run.
        timer = threading.Timer(job.timeout, os.killpg, (process.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C no longer reaches the tool's own group
            os.killpg(process.pid, signal.SIGKILL)
            raise
        finally:
            timer.cancel()
            if tree:
                tree.stop()
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        text = job.log.read_text(errors="replace")
        why = "TLS: test CA not trusted, " if UNTRUSTED.search(text) else ""
        if code == -signal.SIGKILL and seconds >= job.timeout:
            why += f"timed out after {job.timeout:.0f} s"
        else:
            why += f"exit {code}"
        lines = [line for line in text.splitlines() if line.strip()]
        raise ToolFailed(f"{why}; {job.log}: {lines[-1][:300] if lines else ''}")
    files = [p for p in dest.rglob("*") if p.is_file()]
    peak = usage.ru_maxrss  # KiB; without GNU time at least as much as ours ever was
    if peak_file.exists():
        lines = peak_file.read_text().split()
        peak = int(lines[-1]) if lines and lines[-1].isdigit() else peak
    return Run(
        seconds,
        peak / 1024,
        len(files),
        sum(p.stat().st_size for p in files),
        cpu=usage.ru_utime + usage.ru_stime,
        pss_mb=tree.peak_pss / MiB if tree and tree.pss else None,
        settled=settled,
        tree=tree,
    )


def tool_path(name: str) -> str:
    """This environment's copy first (make bench installs the tools there), then PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name) or name


def ours(case: Case, job: Job, pinned: int | None = None, *extra: str) -> Run:
    """crds-s3-sync as users run it; or, `pinned`, with its window of requests in flight
    held at that many (started there, with that ceiling): the fixed --jobs of old, to
    show what the adaptive window costs or saves against the best fixed value; `extra`
    options (--no-fsync: what durability costs). The PSS of its processes is watched."""
    job.watch = True
    return measure(ours_command(case, job, pinned, *extra), job)


def ours_command(case: Case, job: Job, pinned: int | None = None, *extra: str) -> list[str]:
    contexts = [arg for name in case.contexts for arg in ("--context", name)]
    program = [tool_path("crds-s3-sync")]
    if pinned:
        program = [sys.executable, "-c", PINNED_MAIN, "--jobs", str(pinned)]
    return [
        *program,
        "--bucket",
        BUCKET,
        "--prefix",
        PREFIX,
        "--observatory",
        OBS,
        "--endpoint-url",
        job.endpoint,
        "--no-sign-request",
        "--cache",
        str(job.dest),
        "--quiet",
        *contexts,
        *extra,
    ]


def profiled(case: Case, job: Job, raw: Path) -> Run:
    """crds-s3-sync as `ours` runs it, under py-spy, which writes its samples to `raw`;
    the Run's `tree` has the CPU time of each of crds-s3-sync's processes."""
    job.watch = True
    sampler = [tool_path("py-spy"), *PYSPY, "--rate", str(PYSPY_RATE), "-o", str(raw)]
    return measure([*sampler, "--", *ours_command(case, job)], job)


def s5cmd(case: Case, job: Job) -> Run:
    """As many workers as crds-s3-sync has requests in flight."""
    return measure(s5cmd_command(case, job), job)


def s5cmd_default(case: Case, job: Job) -> Run:
    """s5cmd's own default number of workers (256 in v2.3)."""
    return measure(s5cmd_command(case, job, workers=None), job)


def s5cmd_sha1sum(case: Case, job: Job) -> Run:
    """s5cmd, then sha1sum on both cores: what verifying costs a tool that does not."""
    command = shlex.join(s5cmd_command(case, job))
    check = f"find {shlex.quote(str(job.dest))} -type f -print0 | xargs -0 -P 2 -n 64 sha1sum"
    return measure(["sh", "-c", f"{command} >/dev/null && {check}"], job)


def case_keys(case: Case) -> list[str]:
    """Every file of the case as its key under PREFIX: mappings and references."""
    return [
        f"{'mappings' if isinstance(v, bytes) else 'references'}/{OBS}/{name}"
        for name, v in case.files.items()
    ]


def s5cmd_command(case: Case, job: Job, workers: int | None = JOBS) -> list[str]:
    """On rerun, `cp --if-size-differ`: a file of the same size is left alone."""
    cp = "cp --if-size-differ" if case.rerun else "cp"
    lines = [f"{cp} s3://{BUCKET}/{PREFIX}/{key} {job.dest}/{key}" for key in case_keys(case)]
    commands = case.root / case.bucket / "s5cmd.txt"
    commands.write_text("\n".join(lines) + "\n")
    numworkers = ["--numworkers", str(workers)] if workers else []
    return [
        tool_path("s5cmd"),
        "--endpoint-url",
        job.endpoint,
        "--no-sign-request",
        *numworkers,
        "run",
        str(commands),
    ]


def rclone(case: Case, job: Job) -> Run:
    """`rclone copy` of exactly the case's files; on rerun it looks at the destination."""
    files = case.root / case.bucket / "rclone-files.txt"
    files.write_text("\n".join(case_keys(case)) + "\n")
    return rclone_copy(job, files, case.rerun)


def rclone_copy(job: Job, files: Path, rerun: bool) -> Run:
    """`rclone copy` of the keys listed in `files` (--files-from, the source not
    listed), to an anonymous S3 remote configured by environment variables only. With
    `rerun` it looks at the destination (no --no-check-dest) and skips files of the same
    size and modtime."""
    remote = {
        "TYPE": "s3",
        "PROVIDER": "Other",
        "ENDPOINT": job.endpoint,
        "ENV_AUTH": "false",  # no keys and no environment credentials: anonymous
        "FORCE_PATH_STYLE": "true",
        "REGION": "us-east-1",
    }
    env = {f"RCLONE_CONFIG_BENCH_{k}": v for k, v in remote.items()}
    env["RCLONE_CONFIG"] = str(WORK / "rclone.conf")  # empty: no user's remotes
    (WORK / "rclone.conf").touch()
    return measure(
        [
            "rclone",
            "copy",
            f"bench:{BUCKET}/{PREFIX}",
            str(job.dest),
            "--files-from",
            str(files),
            "--no-traverse",
            # The destination is empty: do not look there first (unless it is not).
            *([] if rerun else ["--no-check-dest"]),
            "--ignore-checksum",  # nginx's ETag is no MD5; nothing to check but sizes
            "--transfers",
            str(RCLONE_TRANSFERS),
            "--checkers",
            str(RCLONE_TRANSFERS),
            *(["--ca-cert", str(job.ca)] if job.ca else []),
        ],
        job,
        env=env,
    )


def aws(case: Case, job: Job) -> Run:
    return measure(
        [
            "aws",
            "s3",
            "sync",
            f"s3://{BUCKET}/{PREFIX}/references/{OBS}/",
            str(job.dest / "references" / OBS),
            "--endpoint-url",
            job.endpoint,
            "--no-sign-request",
            "--only-show-errors",
        ],
        job,
    )


def floor(case: Case, job: Job, *extra: str) -> Run:
    """`floor.py`: the least a verified (and, without --no-fsync, durable) sync does in
    Python on our engine; not a peer, a measure of what crds-s3-sync adds to it."""
    config = read_server_config(case.key_dir("config") / "server_config")
    keys = case.root / case.bucket / "floor-keys.txt"
    lines = []
    for key in case_keys(case):
        size, sha1 = config.metadata[key.rsplit("/", 1)[1]]
        lines.append(f"{PREFIX}/{key} {size} {sha1}\n")
    keys.write_text("".join(lines))
    ca = ["--ca", str(job.ca)] if job.ca else []
    program = [sys.executable, str(HERE / "floor.py")]
    return measure([*program, job.endpoint, BUCKET, str(keys), str(job.dest), *ca, *extra], job)


def crds_s3_get(case: Case, job: Job, sample: int = 24) -> Run:
    """As `crds sync` runs it: one process per file. Sampled, then scaled to the case."""
    refs = sorted(n for n, v in case.files.items() if isinstance(v, int))
    picked = refs[:: max(1, len(refs) // sample)][:sample]
    config = read_server_config(case.key_dir("config") / "server_config")
    total = Run(0.0, 0.0, 0, 0)
    for name in picked:
        size, sha1 = config.metadata[name]
        run = measure(
            [
                "crds_s3_get",
                f"s3://{BUCKET}/{PREFIX}/references/{OBS}/{name}",
                "-d",
                str(job.dest / name),
                "-s",
                str(size),
                "-c",
                sha1,
            ],
            job,
            env={"AWS_ENDPOINT_URL": job.endpoint},
        )
        total = Run(
            total.seconds + run.seconds,
            max(total.peak_mb, run.peak_mb),
            total.files + run.files,
            total.bytes + run.bytes,
            total.cpu + run.cpu,
        )
    factor = len(refs) / len(picked)  # mappings are left out: a handful, and tiny
    return Run(
        total.seconds * factor,
        total.peak_mb,
        int(total.files * factor),
        int(total.bytes * factor),
        total.cpu * factor,
    )


def expected(case: Case, tool: str) -> dict[str, int]:
    """The files a complete copy by `tool` holds, under its destination, and their sizes
    (aws syncs the references prefix only)."""
    return {
        key: (v if isinstance(v, int) else len(v))
        for key, v in zip(case_keys(case), case.files.values(), strict=True)
        if tool != "aws" or isinstance(v, int)
    }


def snapshot(dest: Path, keys: list[str]) -> dict[str, tuple[int, int, int] | None]:
    """Inode, size and mtime of each key under dest: what a run that rewrote it changes."""
    found = {}
    for key in keys:
        try:
            stat = (dest / key).stat()
        except FileNotFoundError:
            found[key] = None
        else:
            found[key] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


def warm_up(case: Case, tool: str, job: Job) -> None:
    """The rerun case's untimed first run into an empty `job.dest`; a copy that is not
    complete fails the tool."""
    TOOLS[tool](case, job)
    want = expected(case, tool)
    have = snapshot(job.dest, list(want))
    wrong = [k for k, size in want.items() if not have[k] or have[k][1] != size]
    if wrong:
        raise ToolFailed(f"warm-up left {len(wrong)} of {len(want)} files missing or short")


TOOLS = {
    "crds-s3-sync": ours,
    "s5cmd": s5cmd,
    "s5cmd-default": s5cmd_default,
    "s5cmd+sha1sum": s5cmd_sha1sum,
    "rclone": rclone,
    "aws": aws,
    "crds_s3_get": crds_s3_get,
}
for _n in PINNED:
    TOOLS[f"crds-s3-sync@{_n}"] = functools.partial(ours, pinned=_n)
    TRUST[f"crds-s3-sync@{_n}"] = TRUST["crds-s3-sync"]
    PROGRAM[f"crds-s3-sync@{_n}"] = "python"
TOOLS["floor"] = floor
TOOLS["floor@no-fsync"] = lambda case, job: floor(case, job, "--no-fsync")
for _name in ("floor", "floor@no-fsync"):
    TRUST[_name], PROGRAM[_name] = "--ca", "python"
TOOLS["crds-s3-sync@no-fsync"] = lambda case, job: ours(case, job, None, "--no-fsync")
TRUST["crds-s3-sync@no-fsync"] = TRUST["crds-s3-sync"]
PROGRAM["crds-s3-sync@no-fsync"] = "crds-s3-sync"
for _n in S5CMD_WORKERS:
    TOOLS[f"s5cmd@{_n}"] = functools.partial(
        lambda case, job, workers: measure(s5cmd_command(case, job, workers), job), workers=_n
    )
    TRUST[f"s5cmd@{_n}"] = TRUST["s5cmd"]
    PROGRAM[f"s5cmd@{_n}"] = "s5cmd"


def dd(case: Case, job: Job) -> Run:
    """The large case's reference: `dd` of the same file (warm in the page cache) into the
    destination with conv=fsync, so the disk's own time to take 2 GiB and flush it."""
    (ref,) = (name for name, v in case.files.items() if isinstance(v, int))
    source = case.key_dir("references") / ref
    buffer = bytearray(MiB)  # small: our peak RSS is every child's floor without GNU time
    with source.open("rb", buffering=0) as warm:  # untimed: read once, as nginx has it
        while warm.readinto(buffer):
            pass
    return measure(
        ["dd", f"if={source}", f"of={job.dest / ref}", "bs=8M", "conv=fsync", "status=none"],
        job,
    )


def tool_env(env: dict[str, str], tool: str, link: str, tls: Tls | None) -> dict[str, str]:
    """The run's environment: on https, the one variable by which `tool` trusts the test CA
    (none for a tool told by a command-line option: see Job.ca). Only the aws CLI is
    given the AWS config file: for crds-s3-sync one would mean importing botocore to
    read it, which a CI job's environment does not ask for."""
    if tool != "aws":  # the AWS config file is the aws CLI's concurrency, no one else's
        env = {name: value for name, value in env.items() if name != "AWS_CONFIG_FILE"}
    if link != "https" or not tls or TRUST[tool].startswith("--"):
        return env
    return env | {TRUST[tool]: str(tls.ca)}


def served(log: Path | None, start: int) -> str:
    """What nginx logged since `start` (a size of its access log): requests by TLS version,
    connections, statuses."""
    if log is None:
        return ""
    time.sleep(0.05)  # nginx logs a request just after its last byte left
    with log.open("rb") as lines:
        lines.seek(start)
        fields = [line.split() for line in lines.read().decode().splitlines()]
    if not fields:
        return "; nginx: no requests"
    versions = Counter("plain HTTP" if f[1] == "-" else f[1] for f in fields)
    statuses = Counter(f[2] for f in fields)
    times = [float(f[4]) for f in fields]
    methods = Counter(f[3] for f in fields)
    return (
        f"; nginx: {len(fields)} requests ("
        + ", ".join(f"{v} {n}" for v, n in versions.most_common())
        + "; "
        + ", ".join(f"{m} {n}" for m, n in methods.most_common())
        + f") on {len({f[0] for f in fields})} connections"
        + "; status "
        + ", ".join(f"{s} {n}" for s, n in statuses.most_common())
        + f"; request_time min {min(times):.3f} median {statistics.median(times):.3f} s"
    )


# -- the run -------------------------------------------------------------------------------


def file_system(path: Path) -> str:
    """The type and source of the file system `path` is on (/proc/mounts), e.g.
    "ext4 on /dev/vda", "tmpfs"."""
    path = path.resolve()
    best, found = -1, "unknown file system"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            source, point, kind = line.split()[:3]
            point = point.replace("\\040", " ")
            if path.is_relative_to(point) and len(point) > best:
                best = len(point)
                found = kind if kind == source else f"{kind} on {source}"
    return found


def load_average() -> str:
    """`uptime`'s load averages, said; a warning if the last minute's is above
    LOAD_WARNING (others are using the machine: figures will be noisy)."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    said = uptime[uptime.index("load average") :] if "load average" in uptime else uptime
    one = os.getloadavg()[0]
    if one > LOAD_WARNING:
        said += f" (warning: above {LOAD_WARNING:g}: other work is running, timings are noisy)"
    return said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default="realistic,small,large",
        help=f"any of {', '.join(CASES)}; default: realistic,small,large",
    )
    parser.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"any of {', '.join(TOOLS)} (crds-s3-sync@N: its window held at N requests "
        "in flight; @no-fsync: without flushing files to disk; s5cmd@N: --numworkers N); "
        f"default: {','.join(DEFAULT_TOOLS)}",
    )
    parser.add_argument(
        "--links",
        default=",".join(LINKS),
        help="any of http (plain), https (TLS, test CA), far (plain, 40 ms before each "
        "answer, 100 MiB/s per request); default: all three",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, default=200)
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEST,
        help="where tools write, emptied before each run (default: benchmarks/.data/dest, on "
        "the disk; e.g. /dev/shm/crds-bench for tmpfs)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="realistic",
        default="",
        metavar="CASES",
        help="after the timed runs of these cases (default: realistic), crds-s3-sync once "
        "more on each link, then again under py-spy: a table of where its CPU time went",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="have nginx log each request (with its TLS version) and count them after each "
        "run; costs the server a write per request, so off by default",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one tool process may run before it is killed and reported failed",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    try:
        run_benchmark(args, parser)
    finally:
        clear_aside()


def run_benchmark(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    links = args.links.split(",")
    if not links or set(links) - set(LINKS):
        parser.error(f"--links: one or more of {', '.join(LINKS)}")
    tools = args.tools.split(",")
    if set(tools) - set(TOOLS):
        parser.error(f"--tools: one or more of {', '.join(TOOLS)}")
    cases = args.cases.split(",")
    if set(cases) - set(CASES):
        parser.error(f"--cases: one or more of {', '.join(CASES)}")
    profile = [c for c in args.profile.split(",") if c]
    if set(profile) - set(cases):
        parser.error("--profile: cases of --cases")
    if profile and not Path(tool_path("py-spy")).exists():
        print("--profile: py-spy not found (pip install py-spy, or the bench extra)", flush=True)
        profile = []
    for tool in [t for t in tools if not Path(tool_path(PROGRAM.get(t, t))).exists()]:
        print(f"{tool}: {PROGRAM.get(tool, tool)} not found, left out", flush=True)
        tools.remove(tool)
    load = load_average()
    print(load, flush=True)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # Installed packages come with their bytecode compiled; a shell that stops Python
    # writing it would charge every run for compiling our modules again.
    skip = (*CA_VARIABLES, "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in skip} | {
        "PATH": path,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(WORK / "aws-config"),
    }
    WORK.mkdir(exist_ok=True)
    (WORK / "aws-config").write_text("[default]\ns3 =\n  max_concurrent_requests = 64\n")
    tls = make_tls(WORK / "tls") if "https" in links else None
    delay = far_delay(WORK / "nginx-probe") if "far" in links else None
    args.dest.mkdir(parents=True, exist_ok=True)
    shown_dest = (
        os.path.relpath(args.dest, HERE.parent)
        if args.dest.is_relative_to(HERE.parent)
        else str(args.dest)
    )
    report = [
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d')}; at the start, {load}. Medians of {args.repeat} runs, "
        f"tools alternating, each into `{shown_dest}` ({file_system(args.dest)}), emptied "
        "and written back before each run. "
        f"Links: {', '.join(links)}"
        + (
            f" (far: {FAR_DELAY * 1000:.0f} ms before each answer by nginx's {delay} module, "
            f"{FAR_RATE} MiB/s per request)"
            if delay
            else ""
        )
        + f"; each ratio is to s5cmd (at --numworkers {JOBS}) or to the fastest peer "
        f"({', '.join(p for p in PEERS if p in tools)}) over the same link.\n"
    ]
    for name in cases:
        case = build_case(name, args.scale)
        if case.note:
            print(f"{name}: {case.note}", flush=True)
        left_out = [t for t in tools if case.rerun and t not in RERUN]
        for tool in left_out:
            print(f"{name}: {tool} left out: no mode that skips files in place", flush=True)
        case_tools = [t for t in tools if t not in left_out]
        warm: set[tuple[str, str]] = set()
        rewrote: dict[tuple[str, str], int] = {}
        log = case.root / case.bucket / "access.log" if args.access_log else None
        if log:
            log.unlink(missing_ok=True)
        server, endpoints = start_nginx(case.srv, links, tls, log, delay)
        runs: dict[tuple[str, str], list[Run]] = {(k, t): [] for k in links for t in case_tools}
        failed: dict[tuple[str, str], str] = {}
        references: list[Run] = []  # dd's, on the large case
        profiles: list[str] = []
        try:
            for repeat in range(args.repeat):
                turn = repeat % max(1, len(case_tools))
                order = case_tools[turn:] + case_tools[:turn]
                if name == "large":  # the disk's own time, for reference
                    job = Job("", args.dest / "dd", env, WORK / "dd.log", args.timeout)
                    try:
                        references.append(dd(case, job))
                        print(f"{name} dd conv=fsync: {references[-1].seconds:.2f} s", flush=True)
                    except ToolFailed as exc:
                        print(f"{name} dd: FAILED: {exc}", flush=True)
                    set_aside(job.dest)
                for link in links[repeat % len(links) :] + links[: repeat % len(links)]:
                    for tool in order:
                        if tool == "crds_s3_get" and repeat > 0:
                            continue  # sampled and scaled: one pass is enough
                        if (link, tool) in failed:
                            continue
                        job = Job(
                            endpoints[link],
                            # rerun: a copy for each link, kept from the warm-up on
                            args.dest / (f"rerun/{tool}-{link}" if case.rerun else tool),
                            tool_env(env, tool, link, tls),
                            WORK / f"{tool}-{link}.log",
                            args.timeout,
                            tls.ca if tls and link == "https" else None,
                        )
                        keys = list(expected(case, tool)) if case.rerun else []
                        try:
                            if case.rerun and (link, tool) not in warm:
                                warm_up(case, tool, job)
                                warm.add((link, tool))
                            job.keep = case.rerun
                            before = snapshot(job.dest, keys)
                            start = log.stat().st_size if log and log.exists() else 0
                            run = TOOLS[tool](case, job)
                        except ToolFailed as exc:
                            failed[link, tool] = str(exc)
                            print(f"{name} {link} {tool}: FAILED: {exc}", flush=True)
                            continue
                        finally:
                            if not case.rerun:  # untimed; its writeback is waited for next
                                set_aside(job.dest)
                        runs[link, tool].append(run)
                        changed = ""
                        if case.rerun:
                            after = snapshot(job.dest, keys)
                            count = sum(before[k] != after[k] for k in keys)
                            rewrote[link, tool] = max(rewrote.get((link, tool), 0), count)
                            changed = f", {count} of {len(keys)} rewritten"
                        pss = f", PSS {run.pss_mb:.0f} MB" if run.pss_mb is not None else ""
                        print(
                            f"{name} {link} {tool}: {run.seconds:.2f} s, {run.files} files, "
                            f"{run.bytes / MiB:.0f} MiB, peak {run.peak_mb:.0f} MB{pss}, "
                            f"CPU {run.cpu:.2f} s (settled {run.settled:.1f} s before)"
                            f"{changed}" + served(log, start),
                            flush=True,
                        )
            for link in links if name in profile else []:
                profiles.append(
                    profile_case(case, link, endpoints[link], env, tls, args, runs, failed)
                )
        finally:
            server.terminate()
            server.wait()
            if case.rerun:
                shutil.rmtree(args.dest / "rerun", ignore_errors=True)
        notes = [f"- {t}: left out, no mode that skips files in place" for t in left_out]
        notes += [
            f"- {link} {tool}: rewrote {count} files it already held"
            for (link, tool), count in rewrote.items()
            if count
        ]
        if references:
            seconds = statistics.median(r.seconds for r in references)
            (size,) = (v for v in case.files.values() if isinstance(v, int))
            notes.append(
                f"- reference, the destination's own write and flush of the same "
                f"{size / GiB:g} GiB: `dd bs=8M conv=fsync` from the page cache took "
                f"{seconds:.2f} s ({size / MiB / seconds:,.0f} MiB/s; median of "
                f"{len(references)})"
            )
        report.append(table(case, runs, failed, notes) + "".join(profiles))
        args.out.write_text("\n".join(report))
    args.out.write_text("\n".join(report))
    print("\n".join(report))


def profile_case(
    case: Case,
    link: str,
    endpoint: str,
    env: dict[str, str],
    tls: "Tls | None",
    args: argparse.Namespace,
    runs: dict[tuple[str, str], list[Run]],
    failed: dict[tuple[str, str], str],
) -> str:
    """Two more runs of crds-s3-sync on `link`, one after the other: as timed, then under
    py-spy. The table of where its CPU time went, and what profiling cost."""
    raw = WORK / f"profile-{case.name}-{link}.txt"
    job = Job(
        endpoint,
        args.dest / "crds-s3-sync-profiled",
        tool_env(env, "crds-s3-sync", link, tls),
        WORK / f"py-spy-{link}.log",
        args.timeout,
    )
    try:
        plain = ours(case, job)
        set_aside(job.dest)
        run = profiled(case, job, raw)
    except ToolFailed as exc:
        print(f"{case.name} {link} crds-s3-sync, --profile: FAILED: {exc}", flush=True)
        return f"\n\nWhere crds-s3-sync's CPU time goes ({link}): a run failed: {exc}\n"
    finally:
        set_aside(job.dest)
    print(
        f"{case.name} {link} crds-s3-sync: {plain.seconds:.2f} s, CPU {plain.cpu:.2f} s; "
        f"under py-spy: {run.seconds:.2f} s",
        flush=True,
    )
    timed = runs.get((link, "crds-s3-sync"), []) if (link, "crds-s3-sync") not in failed else []
    return profile_table(case, link, raw, run, plain, timed)


def short_path(path: str) -> str:
    """A frame's file as PROFILE_RULES see it: its last two path components."""
    return "/".join(path.split("/")[-2:])


def classify(stack: list[tuple[str, str, int]]) -> str:
    """The PROFILE_RULES category of one sample: `stack` of (qualname, file, line) from
    the outermost frame to the innermost, as py-spy writes them."""
    shown = [f"{function} {short_path(path)}" for function, path, _ in stack]
    if stack:
        _, path, line = stack[-1]
        shown[-1] += f": {linecache.getline(path, line).strip() if line else ''}"
    for category, pattern in _PROFILE_RULES:
        if any(pattern.search(frame) for frame in shown):
            return category
    return OTHER


_PROFILE_RULES = [(category, re.compile(pattern)) for category, pattern in PROFILE_RULES]
_SAMPLE = re.compile(r'^((?:process (\d+):".*?";)+)(.*) (\d+)$')
_FRAME = re.compile(r"^(.*) \((.*?)(?::(\d+))?\)$")


def read_profile(raw: Path) -> tuple[dict[int, Counter], Counter]:
    """py-spy's raw samples (`--format raw`: one stack a line, `process PID:"command"`
    first for the process and each of its parents, then frames outermost first, then a
    count): samples per category for each process, and the innermost frames of those
    left in OTHER."""
    samples: dict[int, Counter] = defaultdict(Counter)
    others: Counter = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        pid = int(re.findall(r'process (\d+):"', match.group(1))[-1])
        stack = []
        for frame in match.group(3).split(";") if match.group(3) else []:
            parts = _FRAME.match(frame)
            if parts:
                stack.append((parts[1], parts[2], int(parts[3] or 0)))
        count = int(match.group(4))
        category = classify(stack)
        samples[pid][category] += count
        if category == OTHER and stack:
            others[f"{stack[-1][0]} ({short_path(stack[-1][1])}:{stack[-1][2]})"] += count
    return samples, others


def profile_table(case: Case, link: str, raw: Path, run: Run, plain: Run, timed: list[Run]) -> str:
    """Where crds-s3-sync's CPU time went in the profiled `run`: each process's CPU time
    (/proc, `TreeWatch`) split by its samples' categories, the main process and its
    forked helpers apart; what profiling cost against the `plain` run just before it
    (and the `timed` runs of the case)."""
    samples, others = read_profile(raw)
    tree = run.tree
    assert tree is not None  # profiled() watches its processes
    main = set(tree.tops())
    helpers = sorted(pid for pid in samples if pid not in main)
    groups = {"main process": sorted(main & samples.keys())}
    if helpers:
        groups[f"{len(helpers)} helper{'s' if len(helpers) > 1 else ''}"] = helpers
    order = [STARTUP, PLANNING, HTTP, HASHING, WRITING, FLUSHING, BOOKKEEPING, OTHER]
    seconds: dict[str, Counter] = {group: Counter() for group in groups}
    cpu: Counter = Counter()
    for group, pids in groups.items():
        for pid in pids:
            busy = sum(n for c, n in samples[pid].items() if c != IDLE)
            if not busy:
                continue
            # Its CPU time as last read; for one never read (too short-lived), its samples'.
            own = tree.cpu.get(pid, busy / PYSPY_RATE)
            cpu[group] += own
            for category in order:
                seconds[group][category] += own * samples[pid][category] / busy
    total = sum(cpu.values()) or 1.0
    count = sum(sum(c.values()) for c in samples.values())
    idle = sum(c[IDLE] for c in samples.values())
    heading = f"\n\n#### Where crds-s3-sync's CPU time goes ({case.name}, {link})\n"
    rows = [
        heading,
        "| where | " + " | ".join(groups) + " | all | share |",
        "|---" * (len(groups) + 3) + "|",
    ]
    for category in order:
        cells = [f"{seconds[group][category]:.2f} s" for group in groups]
        part = sum(seconds[group][category] for group in groups)
        rows.append(
            f"| {category} | " + " | ".join(cells) + f" | {part:.2f} s | "
            f"{100 * part / total:.0f} % |"
        )
    cells = [f"**{cpu[group]:.2f} s**" for group in groups]
    rows.append(
        "| **CPU time (user + system)** | " + " | ".join(cells) + f" | **{total:.2f} s** | 100 % |"
    )
    notes = [
        f"- py-spy {' '.join(PYSPY)} --rate {PYSPY_RATE}: {count:,} samples of running "
        f"threads, {idle:,} of them of threads waiting (left out); each process's CPU time "
        f"(read from /proc every {TREE_EVERY * 1000:.0f} ms, so up to that much short) is "
        "split in proportion to its samples"
    ]
    wrappers = sum(tree.wrappers_cpu.values())
    median = (
        f"; the timed runs' median: {statistics.median(r.seconds for r in timed):.2f} s"
        if timed
        else ""
    )
    notes.append(
        f"- profiling's cost: under py-spy the run took {run.seconds:.2f} s and {total:.2f} s "
        f"of CPU; the same run just before, without it: {plain.seconds:.2f} s and "
        f"{plain.cpu:.2f} s ({100 * (run.seconds / plain.seconds - 1):+.0f} % wall time, "
        f"{100 * (total / plain.cpu - 1):+.0f} % CPU time){median}; py-spy itself used "
        f"{wrappers:.2f} s of CPU, on the same {os.cpu_count()} cores"
    )
    if others:
        shown = ", ".join(f"{frame} {n}" for frame, n in others.most_common(5))
        notes.append(f"- other, by innermost frame (samples): {shown}")
    return "\n".join([*rows, "", *notes])


def table(
    case: Case, runs: dict[tuple[str, str], list[Run]], failed: dict, extra: list[str] = ()
) -> str:
    total = sum(v if isinstance(v, int) else len(v) for v in case.files.values())
    about = f" ({case.note})" if case.note else ""
    if case.rerun:
        about += "; each tool's destination already holds them: timed is the run with nothing to do"
    refs = [v for v in case.files.values() if isinstance(v, int)]
    kinds = f"{len(refs):,} reference{'s' if len(refs) != 1 else ''}"
    kinds += f" and {len(case.files) - len(refs):,} mappings"
    rows = [
        f"\n### {case.name}: {len(case.files):,} files ({kinds}), {total / MiB:,.0f} MiB{about}\n",
        "| link | tool | wall s (median) | MiB/s | files/s | CPU s | peak RSS MB "
        "| peak PSS MB, all processes | time / s5cmd | time / best peer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    medians = {key: statistics.median(r.seconds for r in rs) for key, rs in runs.items() if rs}
    best = {}  # link: (seconds, peer)
    for (link, tool), seconds in medians.items():
        if tool in PEERS and seconds < best.get(link, (float("inf"),))[0]:
            best[link] = (seconds, tool)
    for link, tool in runs:
        note = " (sampled, scaled)" if tool == "crds_s3_get" else ""
        if (link, tool) in failed:
            why = failed[link, tool]
            rows.append(
                f"| {link} | {tool}{note} | failed: {why.split(';')[0]} "
                "| - | - | - | - | - | - | - | - |"
            )
            notes.append(f"- {link} {tool}: {why}")
            continue
        if not runs[link, tool]:
            continue
        seconds = medians[link, tool]
        base = medians.get((link, "s5cmd"))
        peak = max(r.peak_mb for r in runs[link, tool])
        psses = [r.pss_mb for r in runs[link, tool] if r.pss_mb is not None]
        pss = f"{max(psses):.0f}" if psses else "-"
        cpu = statistics.median(r.cpu for r in runs[link, tool])
        ratio = f"{seconds / base:.2f}" if base else "-"
        to_best = f"{seconds / best[link][0]:.2f}" if link in best else "-"
        rows.append(
            f"| {link} | {tool}{note} | {seconds:.2f} | {total / MiB / seconds:,.0f} | "
            f"{len(case.files) / seconds:,.0f} | {cpu:.2f} | {peak:.0f} | {pss} | {ratio} "
            f"| {to_best} |"
        )
    for link in {link for link, _ in medians}:
        pinned = [
            (s, t)
            for (k, t), s in medians.items()
            if k == link and t.startswith("crds-s3-sync@") and t.split("@")[-1].isdigit()
        ]
        if pinned and (link, "crds-s3-sync") in medians:
            seconds, tool = min(pinned)
            ours = medians[link, "crds-s3-sync"]
            notes.append(
                f"- {link}: the adaptive window took {ours / seconds:.2f} times the best "
                f"pinned one ({tool}, {seconds:.2f} s)"
            )
        if (link, "crds-s3-sync@no-fsync") in medians and (link, "crds-s3-sync") in medians:
            unflushed = medians[link, "crds-s3-sync@no-fsync"]
            notes.append(
                f"- {link}: flushing every file before it appears took "
                f"{medians[link, 'crds-s3-sync'] / unflushed:.2f} times a --no-fsync run"
            )
    fastest = [f"{link} {peer} ({seconds:.2f} s)" for link, (seconds, peer) in best.items()]
    notes = ([f"- best peer: {'; '.join(fastest)}"] if fastest else []) + notes + list(extra)
    return "\n".join(rows + ([""] if notes else []) + notes)


if __name__ == "__main__":
    main()
