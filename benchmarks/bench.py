"""Throughput benchmark: crds-s3-sync against s5cmd, rclone, the AWS CLI and crds_s3_get.

Every tool downloads the same objects from the same local server (nginx on
127.0.0.1 serving a directory as path-style /<bucket>/<key>, with a
pre-rendered ListObjectsV2 answer for `aws s3 sync`), runs alternate, and each
case reports the median wall time, throughput, files per second, peak memory
and the ratios to s5cmd and to the fastest peer (`PEERS`) over the same link.
moto stays the test suite's server: it is too slow to tell fast clients apart.

Links (`--links`): plain HTTP; HTTPS with a test CA made once under
benchmarks/.data/tls (each tool is told to trust that CA by its own setting, `TRUST`);
and `far`, plain HTTP with every answer delayed 40 ms and each request capped at
100 MiB/s, as from another region (nginx's Lua module, `FAR`). A tool that fails is
reported as failed for that case and link.

Cases (see `build_case`): realistic (the last 5 JWST contexts, real sizes / 200,
clamped to [512 B, 64 MiB]), small (5,000 files of 2-8 KiB), large (one 2 GiB
file), many (every JWST context of the full rules in ../shared/crds-cache-test, with
references of 64-512 B) and rerun (many again into a complete copy each tool made
before, untimed: nothing to do). Run: `make bench`, or `python benchmarks/bench.py --help`.
"""

import argparse
import functools
import hashlib
import ipaddress
import json
import os
import pprint
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from crds_s3_sync.demo import encode_metadata
from crds_s3_sync.server_config import parse_server_config
from crds_s3_sync.transfer import TransferOptions
from crds_s3_sync.walker import context_serial, walk

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "tests" / "data"
# The full rules (every JWST context), beside the repository; the many case falls back to
# RULES (5 contexts) without them.
FULL_RULES = (HERE.parent / ".." / "shared" / "crds-cache-test").resolve()
WORK = HERE / ".data"
BUCKET, PREFIX, OBS = "bench", "crds", "jwst"
JWST_LAST_5 = [f"jwst_{n:04d}.pmap" for n in range(537, 542)]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEST = Path("/dev/shm/crds-bench") if Path("/dev/shm").is_dir() else WORK / "dest"
LINKS = ("http", "https", "far")
CASES = ("realistic", "small", "large", "many", "rerun")
JOBS = TransferOptions.jobs  # crds-s3-sync's default --jobs; s5cmd gets as many workers
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


def many(name: str) -> Case:
    """Every JWST context (each .pmap that server_config lists and the rules hold), with
    tiny references (64-512 B); the full rules if present, else the vendored five."""
    shown = os.path.relpath(FULL_RULES, HERE.parent)  # results name no machine's paths
    rules, note = FULL_RULES, f"every JWST context of {shown}"
    if not (rules / "config/jwst/server_config").is_file():
        rules = RULES
        note = f"{shown} not found: fell back to the vendored rules of tests/data"
    config = parse_server_config((rules / "config/jwst/server_config").read_text(), "jwst")
    contexts = sorted(
        (
            m
            for m in config.mappings
            if m.endswith(".pmap") and (rules / "mappings/jwst" / m).is_file()
        ),
        key=context_serial,
    )

    async def fetch(name: str) -> bytes:
        return (rules / "mappings/jwst" / name).read_bytes()

    walked = anyio.run(walk, contexts, fetch, 16)
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


@dataclass
class Tls:
    ca: Path  # what the clients trust
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost
    key: Path


def make_tls(where: Path) -> Tls:
    """A test CA and a server certificate it signed, made once and reused while valid.

    RSA 2048 and SHA-256, as S3's own certificates; the CA's key is not kept."""
    tls = Tls(where / "ca.pem", where / "server.pem", where / "server.key")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    if all(p.exists() for p in (tls.ca, tls.cert, tls.key)):
        cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
        if cert.not_valid_after_utc > now + timedelta(days=1):
            return tls
    where.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crds-s3-sync bench CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())

    def certificate(subject: x509.Name, public_key, extensions: list) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(ca_key, hashes.SHA256())

    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    ca = certificate(
        ca_name,
        ca_key.public_key(),
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(**usage | {"key_cert_sign": True, "crl_sign": True}), True),
        ],
    )
    server = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        key.public_key(),
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(**usage | {"digital_signature": True, "key_encipherment": True}), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                    ]
                ),
                False,
            ),
        ],
    )
    pem = serialization.Encoding.PEM
    tls.key.unlink(missing_ok=True)
    tls.key.touch(mode=0o600)
    tls.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls.cert.write_bytes(server.public_bytes(pem))
    tls.ca.write_bytes(ca.public_bytes(pem))
    return tls


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
    server = subprocess.Popen(["nginx", "-p", str(srv.parent), "-c", str(conf)])
    for port in ports.values():
        for _ in range(100):
            if server.poll() is not None:
                raise SystemExit(f"nginx exited ({server.returncode}); its configuration: {conf}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
    scheme = {"https": "https"}
    return server, {
        link: f"{scheme.get(link, 'http')}://127.0.0.1:{port}" for link, port in ports.items()
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
RERUN = ("crds-s3-sync", "s5cmd", "s5cmd-default", "rclone", "aws")
# The other tools that fetch a case's files in one process: "time / best peer" is to the
# fastest of them over the same link. s5cmd+sha1sum and crds_s3_get are not peers.
PEERS = ("s5cmd", "s5cmd-default", "rclone", "aws")
UNTRUSTED = re.compile(
    r"certificate verify failed|CERTIFICATE_VERIFY_FAILED|unknown authority"
    r"|unable to get local issuer certificate|SSL validation failed",
    re.IGNORECASE,
)


@dataclass
class Run:
    seconds: float
    peak_mb: float
    files: int
    bytes: int


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


class ToolFailed(Exception):
    """A tool exited non-zero: why, in a few words, for the table."""


def measure(command: list[str], job: Job, quiet: bool = True, env: dict | None = None) -> Run:
    """Wall time and peak RSS of one command (and the children it waited for)."""
    dest = job.dest
    if not job.keep:
        shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    os.sync()  # the last run's writeback must not land on this one's clock
    with job.log.open("w") as errors:
        start = time.perf_counter()
        process = subprocess.Popen(
            [tool_path(command[0]), *command[1:]],
            env=job.env | (env or {}),
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=errors,
            start_new_session=True,  # its own process group, to end with whatever it started
        )
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
    return Run(seconds, usage.ru_maxrss / 1024, len(files), sum(p.stat().st_size for p in files))


def tool_path(name: str) -> str:
    """This environment's copy first (make bench installs the tools there), then PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name) or name


def ours(case: Case, job: Job, pinned: int | None = None, *extra: str) -> Run:
    """crds-s3-sync as users run it; or, `pinned`, with its window of requests in flight
    held at that many (started there, with that ceiling): the fixed --jobs of old, to
    show what the adaptive window costs or saves against the best fixed value; `extra`
    options (--no-fsync: what durability costs)."""
    contexts = [arg for name in case.contexts for arg in ("--context", name)]
    program = ["crds-s3-sync"]
    if pinned:
        program = [sys.executable, "-c", PINNED_MAIN, "--jobs", str(pinned)]
    return measure(
        [
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
        ],
        job,
    )


# The CLI with the window starting at its ceiling, so --jobs N holds N in flight.
PINNED_MAIN = (
    "import sys, crds_s3_sync.concurrency as c; c.START = 1 << 20; "
    "from crds_s3_sync.cli import main; sys.argv[0] = 'crds-s3-sync'; main()"
)
PINNED = (32, 64, 128, 256)


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
    """`rclone copy` of exactly the case's files (--files-from, the source not listed), to
    an anonymous S3 remote configured by environment variables only. On rerun it looks at
    the destination (no --no-check-dest) and skips files of the same size and modtime."""
    files = case.root / case.bucket / "rclone-files.txt"
    files.write_text("\n".join(case_keys(case)) + "\n")
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
            *([] if case.rerun else ["--no-check-dest"]),
            "--ignore-checksum",  # nginx's ETag is no MD5; nothing to check but sizes
            "--transfers",
            str(JOBS),
            "--checkers",
            str(JOBS),
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


def crds_s3_get(case: Case, job: Job, sample: int = 24) -> Run:
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
                str(job.dest / name),
                "-s",
                str(meta.size),
                "-c",
                meta.sha1,
            ],
            job,
            env={"AWS_ENDPOINT_URL": job.endpoint},
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
TOOLS["crds-s3-sync@no-fsync"] = lambda case, job: ours(case, job, None, "--no-fsync")
TRUST["crds-s3-sync@no-fsync"] = TRUST["crds-s3-sync"]
PROGRAM["crds-s3-sync@no-fsync"] = "crds-s3-sync"


def tool_env(env: dict[str, str], tool: str, link: str, tls: Tls | None) -> dict[str, str]:
    """The run's environment: on https, the one variable by which `tool` trusts the test CA
    (none for a tool told by a command-line option: see Job.ca)."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default="realistic,small,large",
        help=f"any of {', '.join(CASES)}; default: realistic,small,large",
    )
    parser.add_argument(
        "--tools",
        default=",".join(t for t in TOOLS if "@" not in t),
        help=f"any of {', '.join(TOOLS)} (crds-s3-sync@N: its window held at N requests "
        "in flight; @no-fsync: without flushing files to disk); default: all but those",
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
        help="where tools write (default: tmpfs, so the disk adds no noise)",
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
    links = args.links.split(",")
    if not links or set(links) - set(LINKS):
        parser.error(f"--links: one or more of {', '.join(LINKS)}")
    tools = args.tools.split(",")
    if set(tools) - set(TOOLS):
        parser.error(f"--tools: one or more of {', '.join(TOOLS)}")
    for tool in [t for t in tools if not Path(tool_path(PROGRAM.get(t, t))).exists()]:
        print(f"{tool}: {PROGRAM.get(tool, tool)} not found, left out", flush=True)
        tools.remove(tool)
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
    report = [
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; "
        f"{time.strftime('%Y-%m-%d')}. Medians of {args.repeat} runs, tools alternating. "
        f"Links: {', '.join(links)}"
        + (
            f" (far: {FAR_DELAY * 1000:.0f} ms before each answer by nginx's {delay} module, "
            f"{FAR_RATE} MiB/s per request)"
            if delay
            else ""
        )
        + f"; each ratio is to s5cmd (at --numworkers {JOBS}) or to the fastest peer "
        f"({', '.join(PEERS)}) over the same link.\n"
    ]
    for name in args.cases.split(","):
        if name not in CASES:
            parser.error(f"--cases: one or more of {', '.join(CASES)}")
    for name in args.cases.split(","):
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
        try:
            for repeat in range(args.repeat):
                turn = repeat % max(1, len(case_tools))
                order = case_tools[turn:] + case_tools[:turn]
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
                        runs[link, tool].append(run)
                        changed = ""
                        if case.rerun:
                            after = snapshot(job.dest, keys)
                            count = sum(before[k] != after[k] for k in keys)
                            rewrote[link, tool] = max(rewrote.get((link, tool), 0), count)
                            changed = f", {count} of {len(keys)} rewritten"
                        print(
                            f"{name} {link} {tool}: {run.seconds:.2f} s, {run.files} files, "
                            f"{run.bytes / MiB:.0f} MiB, peak {run.peak_mb:.0f} MB{changed}"
                            + served(log, start),
                            flush=True,
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
        report.append(table(case, runs, failed, notes))
    args.out.write_text("\n".join(report))
    print("\n".join(report))


def table(
    case: Case, runs: dict[tuple[str, str], list[Run]], failed: dict, extra: list[str] = ()
) -> str:
    total = sum(v if isinstance(v, int) else len(v) for v in case.files.values())
    about = f" ({case.note})" if case.note else ""
    if case.rerun:
        about += "; each tool's destination already holds them: timed is the run with nothing to do"
    rows = [
        f"\n### {case.name}: {len(case.files)} files, {total / MiB:,.0f} MiB{about}\n",
        "| link | tool | wall s (median) | MiB/s | files/s | peak RSS MB | time / s5cmd "
        "| time / best peer |",
        "|---|---|---|---|---|---|---|---|",
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
                f"| {link} | {tool}{note} | failed: {why.split(';')[0]} | - | - | - | - | - |"
            )
            notes.append(f"- {link} {tool}: {why}")
            continue
        if not runs[link, tool]:
            continue
        seconds = medians[link, tool]
        base = medians.get((link, "s5cmd"))
        peak = max(r.peak_mb for r in runs[link, tool])
        ratio = f"{seconds / base:.2f}" if base else "-"
        to_best = f"{seconds / best[link][0]:.2f}" if link in best else "-"
        rows.append(
            f"| {link} | {tool}{note} | {seconds:.2f} | {total / MiB / seconds:,.0f} | "
            f"{len(case.files) / seconds:,.0f} | {peak:.0f} | {ratio} | {to_best} |"
        )
    for link in {link for link, _ in medians}:
        pinned = [
            (s, t) for (k, t), s in medians.items() if k == link and t.split("@")[-1].isdigit()
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
