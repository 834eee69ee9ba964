"""The golden run: checksums, agreement with the seed's printed numbers, reproducibility, clear errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import golden
from golden import GOLDEN_DIR, GoldenError, GoldenSet
from golden.generate import main as generate
from tests.seed_notebook import SEED_FILE, printed_outputs

SEED_PRINTED = json.loads((GOLDEN_DIR / "seed_printed.json").read_text())


def test_every_file_matches_its_manifest_checksum():
    assert golden.verify_all() == []


def test_manifest_records_provenance():
    manifest = golden.manifest()
    assert manifest["seed"] == 123
    assert manifest["command"] == "python -m golden.generate"
    assert {"python", "torch", "numpy"} <= set(manifest["versions"])
    for entry in manifest["files"].values():
        assert len(entry["sha256"]) == 64


def test_golden_embedding_equals_the_seed_printout():
    decimals = SEED_PRINTED["printed_decimals"]
    printed = np.array(SEED_PRINTED["embedding"])
    table_rows = golden.load("embedding/x")
    # printed to 4 decimals: the stored value must round to the printed one
    assert np.array_equal(np.round(table_rows.astype(np.float64), decimals), printed)


def test_golden_vocabulary_and_ids_equal_the_seed_printout():
    assert golden.load_json("tokens/vocab") == SEED_PRINTED["vocab"]
    assert golden.load("tokens/ids").tolist() == SEED_PRINTED["token_ids"]


@pytest.mark.skipif(not SEED_FILE.exists(), reason="the seed notebook is not beside this checkout")
def test_transcript_matches_the_seed_notebook():
    assert printed_outputs(SEED_FILE.read_text()) == {k: SEED_PRINTED[k] for k in ("vocab", "token_ids", "embedding")}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("regenerated")
    assert generate(["--out", str(out)]) == 0
    return out


def test_regeneration_reproduces_every_value_within_one_float32_ulp(regenerated):
    """Holds across torch versions: draws come from the same CPU generator, values are correctly rounded."""
    fresh = GoldenSet(regenerated)
    assert fresh.verify_all() == []
    for name in golden.names():
        committed, again = golden.load(name), fresh.load(name)
        assert committed.dtype == again.dtype and committed.shape == again.shape, name
        if committed.dtype.kind == "f":
            spacing = np.spacing(np.abs(committed))
            assert np.all(np.abs(committed - again) <= spacing), name
        else:
            assert np.array_equal(committed, again), name


@pytest.mark.skipif(
    torch.__version__ != golden.manifest()["versions"]["torch"],
    reason=f"bit-identity is promised for the torch version that wrote the files ({golden.manifest()['versions']['torch']})",
)
def test_regeneration_is_bit_identical_with_the_same_torch(regenerated):
    fresh = json.loads((regenerated / "manifest.json").read_text())
    assert fresh["files"] == golden.manifest()["files"]


@pytest.fixture
def golden_copy(tmp_path) -> Path:
    target = tmp_path / "golden"
    shutil.copytree(GOLDEN_DIR / "data", target / "data")
    shutil.copy(GOLDEN_DIR / "manifest.json", target / "manifest.json")
    return target


def test_missing_file_is_named(golden_copy):
    (golden_copy / "data" / "self" / "context.npy").unlink()
    with pytest.raises(GoldenError, match=r"self/context\.npy is missing"):
        GoldenSet(golden_copy).load("self/context")


def test_truncated_file_is_named(golden_copy):
    path = golden_copy / "data" / "self" / "weights.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GoldenError, match=r"self/weights\.npy does not match its checksum"):
        GoldenSet(golden_copy).load("self/weights")


def test_altered_value_is_named(golden_copy):
    path = golden_copy / "data" / "causal" / "weights.npy"
    array = np.load(path)
    array[0, 0] += 1e-3
    np.save(path, array)
    with pytest.raises(GoldenError, match=r"causal/weights\.npy does not match its checksum"):
        GoldenSet(golden_copy).load("causal/weights")


def test_altered_file_with_updated_checksum_but_wrong_shape_is_named(golden_copy):
    path = golden_copy / "data" / "cross" / "x_kv.npy"
    np.save(path, np.zeros((2, 2), dtype=np.float32))
    manifest = json.loads((golden_copy / "manifest.json").read_text())
    manifest["files"]["cross/x_kv.npy"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (golden_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GoldenError, match=r"x_kv\.npy holds float32\[2, 2\], manifest says float32\[8, 16\]"):
        GoldenSet(golden_copy).load("cross/x_kv")


def test_missing_manifest_is_named(golden_copy):
    (golden_copy / "manifest.json").unlink()
    with pytest.raises(GoldenError, match="manifest.json is missing"):
        GoldenSet(golden_copy).names()


def test_suite_reports_a_corrupted_golden_file_by_name(golden_copy, suite):
    path = golden_copy / "data" / "self" / "context.npy"
    path.write_bytes(path.read_bytes()[:-8])
    run = suite("impl", "-k", "golden", env={"CONFORMANCE_GOLDEN_DIR": str(golden_copy)})
    assert run.returncode == 1
    assert run.verdict("GOLD-SELF") == "failed"
    assert "self/context.npy does not match its checksum" in run.reason("GOLD-SELF")
    assert "Traceback" not in run.output


def test_generator_refuses_to_overwrite_a_foreign_data_directory(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit):
        generate(["--out", str(tmp_path)])
    assert "refusing to replace" in capsys.readouterr().err
