"""`prepare`: bad input gives one-line errors per subject, others complete, nothing partial;
re-runs skip up-to-date subjects; the real shared data prepares cleanly."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from conftest import SHARED_DATA, real_persons
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.data.prepare import OUTPUTS, prepare_hcp
from dmri_revgan.dti import fa_md
from dmri_revgan.io import read_nifti, save_nifti


def diffusion(root, subject):
    return root / subject / "T1w" / "Diffusion"


def test_bad_inputs_fail_alone_with_one_line_errors(phantom_set, tmp_path):
    raw, _ = phantom_set
    src = raw / "raw"
    root = tmp_path / "hcp"
    subjects = ["missing-bvecs", "count-mismatch", "mask-grid", "dwi-3d", "truncated", "good"]
    for name in subjects:
        shutil.copytree(src / "phantom-01", root / name)
    (diffusion(root, "missing-bvecs") / "bvecs").unlink()
    bvals = diffusion(root, "count-mismatch") / "bvals"
    bvals.write_text(" ".join(bvals.read_text().split()[:-1]))
    mask, image = read_nifti(diffusion(root, "mask-grid") / "nodif_brain_mask.nii.gz")
    save_nifti(diffusion(root, "mask-grid") / "nodif_brain_mask.nii.gz", mask[:-2], image.affine)
    dwi, image = read_nifti(diffusion(root, "dwi-3d") / "data.nii.gz")
    save_nifti(diffusion(root, "dwi-3d") / "data.nii.gz", dwi[..., 0], image.affine)
    data = diffusion(root, "truncated") / "data.nii.gz"
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prepare", "hcp", "--hcp-root", str(root), "--out", str(out)])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    expected = {
        "missing-bvecs": "bvecs: no such file",
        "count-mismatch": "bvals: 33 b-values for 34 volumes",
        "mask-grid": "nodif_brain_mask.nii.gz: mask grid",
        "dwi-3d": "data.nii.gz: expected a 4D volume",
        "truncated": "data.nii.gz: not a readable NIfTI",
    }
    assert len(errors) == len(expected)
    for subject, problem in expected.items():
        line = next(e for e in errors if e.startswith(f"error: {subject}: "))
        assert str(diffusion(root, subject)) in line and problem in line
        assert not (out / subject).exists() or not any((out / subject).iterdir())
    assert [r.subject for r in read_manifest(out / "data_manifest.csv")] == ["good"]
    assert all((out / "good" / name).is_file() for name in OUTPUTS)
    assert not list(out.rglob(".*tmp*")), "no temporary files left behind"


def test_rerun_skips_up_to_date_subjects_and_computes_missing_mask(phantom_set, tmp_path):
    raw, _ = phantom_set
    root = tmp_path / "hcp"
    shutil.copytree(raw / "raw" / "phantom-02", root / "nomask")
    (diffusion(root, "nomask") / "nodif_brain_mask.nii.gz").unlink()
    first, _ = prepare_hcp(root, tmp_path / "out")
    assert first[0].info["mask_computed"] and not first[0].skipped
    mask, _ = read_nifti(tmp_path / "out" / "nomask" / "hr_mask.nii.gz")
    assert 0.15 < mask.mean() < 0.6
    second, _ = prepare_hcp(root, tmp_path / "out")
    assert second[0].skipped


def check_real_outputs(manifest, n):
    records = read_manifest(manifest)
    assert len(records) == n
    for person in {r.person for r in records}:
        assert len({r.split for r in records if r.person == person}) == 1
    for r in records:
        hr, _ = read_nifti(r.hr_tensor)
        lr, _ = read_nifti(r.lr_tensor)
        mask, _ = read_nifti(r.hr_mask)
        assert np.isfinite(hr).all() and np.isfinite(lr).all()
        fa, md = fa_md(hr)
        wm = (fa > 0.4) & (mask > 0)
        assert 0.5e-3 < np.median(md[wm]) < 1.0e-3, r.subject


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/hcp-like is absent")
def test_real_data_three_scanners(tmp_path):
    subjects = ["canon-3000", "toshiba-6006", "xa30-10"]
    outcomes, manifest = prepare_hcp(
        SHARED_DATA,
        tmp_path,
        subjects,
        workers=2,
        persons=real_persons(subjects),
        ratios=(0.5, 0.5, 0),
    )
    assert all(o.error is None for o in outcomes)
    assert {o.info["bvalue"] for o in outcomes} == {1500.0, 2500.0}  # nearest shell to 1000
    check_real_outputs(manifest, 3)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/hcp-like is absent")
def test_real_data_all_18_series_under_3_minutes(tmp_path, capsys):
    subjects = sorted(p.name for p in SHARED_DATA.iterdir() if p.is_dir())
    start = time.perf_counter()
    outcomes, manifest = prepare_hcp(
        SHARED_DATA, tmp_path, workers=2, persons=real_persons(subjects), ratios=(0.5, 0.5, 0)
    )
    seconds = time.perf_counter() - start
    assert all(o.error is None for o in outcomes) and seconds < 180
    check_real_outputs(manifest, 18)
    with capsys.disabled():
        print(f"\nprepared 18 real series in {seconds:.1f} s (2 workers)")
