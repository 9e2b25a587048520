"""A local S3 server holding a CRDS bucket built from real rules files.

`make demo` uses it so a newcomer can watch a sync without an AWS account, and
the tests use `build_bucket` to make their buckets: real mapping files, and
synthetic references whose size and SHA-1 go into the bucket's own
server_config, exactly where a real bucket keeps them.
"""

import argparse
import base64
import gzip
import hashlib
import json
import logging
import os
import pprint
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .rules.mapping import is_mapping_name, parse_mapping
from .rules.pickles import read_context_pickle
from .rules.server_config import parse_server_config

DEMO_BUCKET = "crds-demo"
DEMO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def synthetic_reference(name: str, size: int) -> bytes:
    """Deterministic bytes for a reference: same name and size, same content everywhere."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def encode_metadata(metadata: dict[str, tuple[int, str]]) -> dict[str, str]:
    """download_metadata as CRDS encodes it (crds.client.proxy.crds_encode)."""
    payload = {
        name: {"size": str(size), "sha1sum": sha1} for name, (size, sha1) in metadata.items()
    }
    packed = gzip.compress(json.dumps(payload).encode())
    return {"crds_encoded": "1.0", "crds_payload": base64.b64encode(packed).decode()}


def build_bucket(
    client: Any,
    bucket: str,
    prefix: str,
    rules_dir: Path,
    observatory: str,
    reference_size: Callable[[str], int],
    public: bool = False,
    mappings: list[str] | None = None,
    pickles: dict[str, bytes] | None = None,
    operational: str | None = None,
    contents: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """Upload config, mappings and synthetic references; return the references' bytes.

    `rules_dir` holds `mappings/<obs>/` and `config/<obs>/server_config` (real
    files). `mappings` limits which mapping files are uploaded (default: all).
    With `pickles` ({context: pickle bytes}) the bucket is laid out as HST's
    are: context pickles and no mapping files. `operational` overrides the
    server_config's operational context. `contents` gives real bytes for the
    references named (a configuration crds reads, say) instead of synthetic ones.
    """
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    extra = {"ACL": "public-read"} if public else {}
    mapping_dir = rules_dir / "mappings" / observatory
    metadata: dict[str, tuple[int, str]] = {}
    references: dict[str, bytes] = {}
    files: dict[str, bytes] = {}  # key under the prefix -> bytes
    refs: list[str] = []
    if pickles is not None:
        for context, data in pickles.items():
            files[f"pickles/{observatory}/{context}.pkl"] = data
            refs += [r for m in read_context_pickle(context, data, context) for r in m.references]
        for path in mapping_dir.iterdir():  # not in the bucket, but listed, as HST's are
            if is_mapping_name(path.name):
                data = path.read_bytes()
                metadata[path.name] = (len(data), hashlib.sha1(data).hexdigest())
    else:
        names = mappings or sorted(p.name for p in mapping_dir.iterdir() if is_mapping_name(p.name))
        for name in names:
            data = files[f"mappings/{observatory}/{name}"] = (mapping_dir / name).read_bytes()
            metadata[name] = (len(data), hashlib.sha1(data).hexdigest())
            refs += parse_mapping(name, data.decode()).references
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{base}{key}", Body=data, **extra)
    for ref in refs:
        references.setdefault(
            ref, (contents or {}).get(ref) or synthetic_reference(ref, reference_size(ref))
        )
    for ref, data in references.items():
        metadata[ref] = (len(data), hashlib.sha1(data).hexdigest())
        client.put_object(
            Bucket=bucket, Key=f"{base}references/{observatory}/{ref}", Body=data, **extra
        )
    config_text = (rules_dir / "config" / observatory / "server_config").read_text()
    config = parse_server_config(config_text, observatory).raw
    config["download_metadata"] = encode_metadata(metadata)
    if operational:
        config["operational_context"] = operational
    client.put_object(
        Bucket=bucket,
        Key=f"{base}config/{observatory}/server_config",
        Body=pprint.pformat(config).encode(),
        **extra,
    )
    return references


def demo_size(name: str) -> int:
    """Sizes spread from 1 KiB to 1 MiB, so the dashboard has something to show."""
    digest = hashlib.sha1(name.encode()).digest()
    return 1024 << (digest[0] % 11)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rules",
        type=Path,
        default=Path("tests/data"),
        help="directory with mappings/<obs>/ and config/<obs>/",
    )
    parser.add_argument("--cache", type=Path, default=Path("demo-cache"))
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(DEMO_CREDENTIALS)
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=DEMO_BUCKET)
    print(f"Demo S3 server on {endpoint}, bucket s3://{DEMO_BUCKET}, building from {args.rules}")
    for obs in ("roman", "jwst"):
        build_bucket(client, DEMO_BUCKET, "crds", args.rules, obs, demo_size, public=True)
    status = 0
    for obs, selection in (("roman", ["--all"]), ("jwst", ["--last", "2"])):
        command = [
            sys.executable,
            "-m",
            "crds_s3_sync",
            "--observatory",
            obs,
            "--bucket",
            DEMO_BUCKET,
            "--prefix",
            "crds",
            "--endpoint-url",
            endpoint,
            "--cache",
            str(args.cache),
            *selection,
        ]
        print("\n$ crds-s3-sync " + " ".join(command[3:]), flush=True)
        status = max(status, subprocess.call(command))
    server.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
