"""--datasets: only the references given datasets need, as crds itself chooses them.

The datasets are real FITS and ASDF files written here (`datasets`), the rules are
the vendored real ones, and every answer is checked against crds's own: the same
`data_file.get_header` and `getrecommendations`, asked in a fresh interpreter of
the synced cache, offline.
"""

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import (
    CREDENTIALS,
    RULES,
    Bucket,
    CliResult,
    MakeBucket,
    command_line,
    files_under,
    reference_size,
    run_crds,
)
from datasets import JWST, write_fits, write_roman

import crds_s3_sync
from crds_s3_sync.demo import build_bucket

CONTEXT = "jwst_0541.pmap"

# crds's own answer for each dataset: {path: {type: file or "NOT FOUND ..."}}
CRDS_ANSWER = """
import json, sys
import crds
from crds import data_file
request = json.loads(sys.argv[1])
answers = {}
for path in request["datasets"]:
    header = data_file.get_header(path, observatory=request["observatory"])
    answers[path] = crds.getrecommendations(
        header, context=request["context"], observatory=request["observatory"]
    )
print(json.dumps(answers))
"""


def crds_answer(cache: Path, observatory: str, context: str, datasets: list[Path]) -> dict:
    request = {"datasets": [str(p) for p in datasets], "context": context}
    return run_crds(
        CRDS_ANSWER, cache, observatory, {**request, "observatory": observatory}, timeout=120
    )


def chosen(answers: dict) -> set[str]:
    return {name for refs in answers.values() for name in refs.values() if "NOT FOUND" not in name}


def references_in(cache: Path, observatory: str) -> set[str]:
    return {Path(p).name for p in files_under(cache / "references" / observatory)}


@pytest.fixture(scope="module")
def jwst_bucket(endpoint: str) -> Iterator[Bucket]:
    """The vendored JWST rules with their 1,800 synthetic references, built once for
    the module (10 s each time): the tests only read it."""
    keys = {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }
    client = boto3.client("s3", endpoint_url=endpoint, **keys)
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    references = build_bucket(client, name, "crds", RULES, "jwst", reference_size)
    yield Bucket(name, "crds", "jwst", endpoint, references)


@pytest.fixture
def jwst_datasets(tmp_path: Path) -> list[Path]:
    return [
        write_fits(tmp_path / "data" / f"{mode}_uncal.fits", "JWST", keywords)
        for mode, keywords in JWST.items()
    ]


def test_sync_fetches_exactly_what_crds_chooses(
    jwst_bucket: Bucket, cli, tmp_path: Path, jwst_datasets: list[Path]
) -> None:
    bucket = jwst_bucket
    cache = tmp_path / "cache"
    result: CliResult = cli(
        CONTEXT, "--datasets", tmp_path / "data", "--cache", cache, *bucket.args(), "--json"
    )
    assert result.exit_code == 0, result.stderr
    answers = crds_answer(cache, "jwst", CONTEXT, jwst_datasets)
    assert chosen(answers), "the datasets select some references"
    assert references_in(cache, "jwst") == chosen(answers)
    document = json.loads(result.stdout)
    for path, refs in answers.items():
        reported = document["datasets"][path][CONTEXT]
        assert reported == {k: "n/a" if v == "NOT FOUND n/a" else v for k, v in refs.items()}
    assert "without CAL_VER" not in result.stderr  # every one has it
    mappings = files_under(cache / "mappings" / "jwst")
    assert CONTEXT in mappings and len(mappings) > 100  # the context's rules, all of them


def test_several_contexts_take_the_union(
    jwst_bucket: Bucket, cli, tmp_path: Path, jwst_datasets: list[Path]
) -> None:
    bucket = jwst_bucket
    cache = tmp_path / "cache"
    result = cli("--last", "2", "--datasets", *jwst_datasets, "--cache", cache, *bucket.args())
    assert result.exit_code == 0, result.stderr
    union = set()
    for context in ("jwst_0540.pmap", "jwst_0541.pmap"):
        union |= chosen(crds_answer(cache, "jwst", context, jwst_datasets))
    assert references_in(cache, "jwst") == union


def test_a_type_crds_finds_no_file_for_is_reported_and_the_rest_fetched(
    jwst_bucket: Bucket, cli, tmp_path: Path
) -> None:
    from datasets import JWST_NO_CAL_VER

    bucket = jwst_bucket
    cache = tmp_path / "cache"
    dataset = write_fits(tmp_path / "nrc.fits", "JWST", JWST_NO_CAL_VER["nircam_no_cal_ver"])
    result = cli(CONTEXT, "--dataset-files", dataset, "--cache", cache, *bucket.args())
    assert result.exit_code == 1, result.stderr
    answers = crds_answer(cache, "jwst", CONTEXT, [dataset])
    missing = [k for k, v in answers[str(dataset)].items() if v.startswith("NOT FOUND No")]
    assert "psfmask" in missing
    assert f"not found: {dataset}: psfmask under {CONTEXT}: NOT FOUND" in result.stderr
    assert references_in(cache, "jwst") == chosen(answers)
    assert "1 dataset without CAL_VER" in result.stderr


def test_dry_run_lists_each_dataset_and_writes_nothing(
    jwst_bucket: Bucket, cli, tmp_path: Path, jwst_datasets: list[Path]
) -> None:
    bucket = jwst_bucket
    cache = tmp_path / "cache"
    args = (CONTEXT, "--datasets", tmp_path / "data", "--cache", cache, *bucket.args())
    planned = cli(*args, "--dry-run", "--json")
    assert planned.exit_code == 0, planned.stderr
    assert not cache.exists()
    listed = cli(*args, "--dry-run")
    assert f"{jwst_datasets[0]} {CONTEXT}: " in listed.stdout
    synced = cli(*args, "--json")
    assert synced.exit_code == 0, synced.stderr
    document, done = json.loads(planned.stdout), json.loads(synced.stdout)
    assert document["datasets"] == done["datasets"]
    answers = crds_answer(cache, "jwst", CONTEXT, jwst_datasets)
    to_download = {Path(f["path"]).name for f in document["to_download"]}
    assert chosen(answers) <= to_download
    assert {f["name"] for f in document["plan"] if f["kind"] == "reference"} == chosen(answers)


def test_check_key_and_shards_work_on_the_datasets_plan(
    jwst_bucket: Bucket, cli, tmp_path: Path, jwst_datasets: list[Path]
) -> None:
    bucket = jwst_bucket
    data = tmp_path / "data"
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    for shard in ("1/2", "2/2"):
        result = cli(
            CONTEXT, "--datasets", data, "--shard", shard, "--cache", sharded, *bucket.args()
        )
        assert result.exit_code == 0, result.stderr
    assert cli(CONTEXT, "--datasets", data, "--cache", whole, *bucket.args()).exit_code == 0
    assert files_under(sharded / "references") == files_under(whole / "references")
    checked = cli(CONTEXT, "--datasets", data, "--check", "--cache", whole, *bucket.args())
    assert checked.exit_code == 0, checked.stderr
    (whole / "references" / "jwst" / sorted(references_in(whole, "jwst"))[0]).unlink()
    checked = cli(CONTEXT, "--datasets", data, "--check", "--cache", whole, *bucket.args())
    assert checked.exit_code == 1 and checked.stdout.startswith("missing references/jwst/")
    keys = [
        cli(CONTEXT, *more, "--print-key", "--cache", whole, *bucket.args()).stdout
        for more in (("--datasets", data), ("--datasets", data), ())
    ]
    assert keys[0] == keys[1] != keys[2]


def test_roman_asdf_datasets(make_bucket: MakeBucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    datasets = [write_roman(tmp_path / "grism.asdf", "GRISM"), write_roman(tmp_path / "f.asdf")]
    result = cli("roman_0005.pmap", "--datasets", *datasets, "--cache", cache, *bucket.args())
    answers = crds_answer(cache, "roman", "roman_0005.pmap", datasets)
    assert len(chosen(answers)) >= 3  # dark, distortion, flat, pipeline parameters
    assert references_in(cache, "roman") == chosen(answers)
    # The F158 exposure has no flat in these rules: said, the rest fetched.
    assert "NOT FOUND" in answers[str(datasets[1])]["flat"]
    assert result.exit_code == 1
    assert f"not found: {datasets[1]}: flat under roman_0005.pmap" in result.stderr


def test_python_api_takes_datasets(
    jwst_bucket: Bucket, tmp_path: Path, jwst_datasets: list[Path]
) -> None:
    bucket = jwst_bucket
    cache = tmp_path / "cache"
    result = crds_s3_sync.sync(
        contexts=[CONTEXT],
        datasets=jwst_datasets,
        cache=cache,
        observatory="jwst",
        bucket=bucket.name,
        prefix=bucket.prefix,
        endpoint_url=bucket.endpoint,
    )
    assert {choice.dataset for choice in result.datasets} == {str(p) for p in jwst_datasets}
    answers = crds_answer(cache, "jwst", CONTEXT, jwst_datasets)
    assert references_in(cache, "jwst") == chosen(answers)


# -- mistakes: each one line, exit 2, before any request --------------------------------

UNREACHABLE = ("--observatory", "jwst", "--bucket", "b", "--endpoint-url", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"<!DOCTYPE html><html><body>Access denied</body></html>", "not a FITS or ASDF file"),
        (b"SIMPLE  =                    T" + b" " * 3000, "not a whole FITS file"),
        (b"", "not a FITS or ASDF file"),
    ],
)
def test_a_file_that_is_no_dataset_is_refused_before_any_request(
    cli, tmp_path: Path, content: bytes, said: str
) -> None:
    junk = tmp_path / "jw01234_uncal.fits"
    junk.write_bytes(content)
    cache = tmp_path / "cache"
    result = cli(CONTEXT, "--datasets", junk, "--cache", cache, *UNREACHABLE)
    assert result.exit_code == 2
    assert said in result.stderr and str(junk) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not cache.exists()


def test_a_missing_file_or_an_empty_directory_is_said(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for given, said in (
        (tmp_path / "gone.fits", "no such dataset file"),
        (tmp_path / "empty", "no .fits or .asdf files"),
    ):
        result = cli(CONTEXT, "--datasets", given, *UNREACHABLE)
        assert result.exit_code == 2 and f"{given}: {said}" in result.stderr, result.stderr


def test_a_dataset_of_another_observatory_is_refused_before_any_request(
    cli, tmp_path: Path
) -> None:
    dataset = write_fits(tmp_path / "x.fits", "JWST", JWST["miri_image"])
    result = cli("--datasets", dataset, "--bucket", "b", "--endpoint-url", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert f"{dataset}: a jwst dataset, but this run is for roman" in result.stderr
    assert "cannot reach" not in result.stderr


@pytest.mark.parametrize(
    ("more", "said"),
    [
        (("--all",), "--datasets with --all"),
        (("--purge-references",), "it would delete what other datasets need"),
        (("--purge",), "it would delete what other datasets need"),
        (("--pickles",), "crds reads the mapping files"),
    ],
)
def test_options_that_cannot_go_with_datasets(
    cli, tmp_path: Path, more: tuple[str, ...], said: str
) -> None:
    dataset = write_fits(tmp_path / "x.fits", "JWST", JWST["miri_image"])
    result = cli(*more, "--datasets", dataset, *UNREACHABLE)
    assert result.exit_code == 2 and said in result.stderr, result.stderr


def test_a_dataset_given_as_a_context_suggests_datasets(cli, tmp_path: Path) -> None:
    dataset = write_fits(tmp_path / "x.fits", "JWST", JWST["miri_image"])
    result = cli(dataset, *UNREACHABLE)
    assert result.exit_code == 2 and "give datasets with --datasets" in result.stderr


def test_without_crds_installed_the_install_command_is_named(
    make_bucket: MakeBucket, tmp_path: Path
) -> None:
    """The extra missing, as its one seam sees it: `import crds` fails."""
    shadow = tmp_path / "shadow" / "crds"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named crds')\n")
    dataset = write_fits(tmp_path / "x.fits", "JWST", JWST["miri_image"])
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CRDS_")},
        "PYTHONPATH": str(shadow.parent),
    }
    done = command_line(
        environment,
        CONTEXT,
        "--datasets",
        dataset,
        *UNREACHABLE,
        "--cache",
        tmp_path / "cache",
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'crds-s3-sync[datasets]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# A SYSTEM CRDSCFG rmap, as JWST contexts once carried: the pipeline configuration
# for a CAL_VER. Its reference is a real configuration with flat fielding taking no
# FLAT, so an answer made with it differs from one made with crds's built-in copy.
CRDSCFG_RMAP = """header = {
    'classes' : ('Match',),
    'derived_from' : 'written by the tests',
    'file_ext' : '.yaml',
    'filekind' : 'CRDSCFG',
    'filetype' : 'CRDSCFG',
    'instrument' : 'SYSTEM',
    'mapping' : 'REFERENCE',
    'name' : 'jwst_system_crdscfg_0001.rmap',
    'observatory' : 'JWST',
    'parkey' : (('META.CALIBRATION_SOFTWARE_VERSION',),),
    'sha1sum' : '0',
    'suffix' : 'crdscfg',
    'text_descr' : 'Pipeline configuration',
}

selector = Match({
    '1.14.0' : 'jwst_system_crdscfg_0001.yaml',
})
"""


# Run in its own interpreter: importing crds changes os.environ (CRDS_CONFIG_URI).
WRITE_CONFIGURATION = """
import json, os, sys, yaml
import crds
from crds.core import rmap
request = json.loads(sys.argv[1])
for path in request["mappings"]:  # their sha1sum, as crds's refactoring tools write it
    rmap.Mapping.from_file(path, ignore_checksum=True).write()
builtin = os.path.join(os.path.dirname(crds.__file__), "jwst", "jwst_system_crdscfg_b7.8.yaml")
with open(builtin) as file:
    configuration = yaml.safe_load(file)
configuration["steps_to_reftypes"]["flat_field"].remove("flat")
with open(request["configuration"], "w") as file:
    yaml.safe_dump(configuration, file)
print(json.dumps("done"))
"""


def test_a_pipeline_configuration_crds_needs_is_fetched_first(
    make_bucket: MakeBucket, cli, tmp_path: Path
) -> None:
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(RULES / "mappings" / "jwst", rules / "mappings" / "jwst")
    shutil.copytree(RULES / "config" / "jwst", rules / "config" / "jwst")
    mappings = rules / "mappings" / "jwst"
    (mappings / "jwst_system_crdscfg_0001.rmap").write_text(CRDSCFG_RMAP)
    system = (mappings / "jwst_system_0018.imap").read_text()
    system = system.replace(
        "'CALVER' :", "'CRDSCFG' : 'jwst_system_crdscfg_0001.rmap',\n    'CALVER' :"
    )
    (mappings / "jwst_system_0019.imap").write_text(system.replace("_0018.imap", "_0019.imap"))
    context = mappings / CONTEXT
    context.write_text(
        context.read_text().replace("jwst_system_0018.imap", "jwst_system_0019.imap")
    )
    written = tmp_path / "configuration.yaml"
    request = {
        "mappings": [
            str(mappings / name)
            for name in ("jwst_system_crdscfg_0001.rmap", "jwst_system_0019.imap", CONTEXT)
        ],
        "configuration": str(written),
    }
    run_crds(WRITE_CONFIGURATION, tmp_path / "unused", "jwst", request, timeout=60)
    contents = {"jwst_system_crdscfg_0001.yaml": written.read_bytes()}
    bucket = make_bucket("jwst", rules=rules, contents=contents)
    cache = tmp_path / "cache"
    dataset = write_fits(tmp_path / "nrc.fits", "JWST", JWST["nircam_image"])
    result = cli(CONTEXT, "--datasets", dataset, "--cache", cache, *bucket.args(), "--json")
    assert result.exit_code == 0, result.stderr
    answers = crds_answer(cache, "jwst", CONTEXT, [dataset])
    assert "flat" not in answers[str(dataset)]  # crds read the configuration fetched
    assert references_in(cache, "jwst") == chosen(answers) | set(contents)
    assert json.loads(result.stdout)["datasets"][str(dataset)][CONTEXT] == {
        k: "n/a" if v == "NOT FOUND n/a" else v for k, v in answers[str(dataset)].items()
    }


def test_the_shells_crds_settings_do_not_reach_crds(
    jwst_bucket: Bucket, tmp_path: Path, jwst_datasets: list[Path]
) -> None:
    """A shell set up for crds's S3 mode (or with other rules elsewhere) must not send
    the workers' crds to S3 or to those rules: it answers on the run's rules alone."""
    bucket = jwst_bucket
    cache = tmp_path / "cache"
    elsewhere = tmp_path / "elsewhere"
    environment = {
        **os.environ,
        "CRDS_S3_ENABLED": "1",
        "CRDS_MAPPATH": str(elsewhere / "mappings"),
        "CRDS_CFGPATH": str(elsewhere / "config"),
        "CRDS_REFPATH": str(elsewhere / "references"),
        "CRDS_MODE": "remote",
    }
    done = command_line(
        environment,
        CONTEXT,
        "--datasets",
        *jwst_datasets,
        *bucket.args(),
        "--cache",
        cache,
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert references_in(cache, "jwst") == chosen(
        crds_answer(cache, "jwst", CONTEXT, jwst_datasets)
    )
    assert not elsewhere.exists()


def test_a_context_after_the_datasets_is_said(cli, tmp_path: Path) -> None:
    dataset = write_fits(tmp_path / "x.fits", "JWST", JWST["miri_image"])
    result = cli("--datasets", dataset, CONTEXT, *UNREACHABLE)
    assert result.exit_code == 2
    assert (
        f"{CONTEXT} is a context, not a dataset: name contexts before --datasets" in result.stderr
    )
