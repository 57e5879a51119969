"""`prepare`: bad input gives one-line errors per subject, others complete, nothing partial;
re-runs skip up-to-date subjects; several HCP folders (or a persons file's `folder` column) feed
one manifest split by person; the real shared data prepares cleanly."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from conftest import SHARED_DATA, real_persons
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.data.persons import read_persons, read_persons_roots
from dmri_revgan.data.prepare import OUTPUTS, prepare_hcp
from dmri_revgan.dti import fa_md
from dmri_revgan.errors import InputError
from dmri_revgan.io import read_nifti, save_nifti

runner = CliRunner()


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


def _link_subjects(phantom_set, root, names):
    """An HCP folder ``root`` whose subjects ``names`` link to the phantom set's raw subjects
    (phantom-01, phantom-02, … in order): no copies, no new data."""
    raw, _ = phantom_set
    root.mkdir(parents=True)
    for i, name in enumerate(names, start=1):
        (root / name).symlink_to(raw / "raw" / f"phantom-{i:02d}", target_is_directory=True)
    return root


def test_several_hcp_folders_one_manifest_split_by_person(phantom_set, tmp_path):
    site_a = _link_subjects(phantom_set, tmp_path / "site-a", ["a1", "a2"])
    site_b = _link_subjects(phantom_set, tmp_path / "site-b", ["b1", "b2"])
    persons = {"a1": "P", "a2": "Q", "b1": "P", "b2": "R"}  # P was scanned at both sites
    outcomes, manifest = prepare_hcp(
        [site_a, site_b], tmp_path / "out", persons=persons, ratios=(0.5, 0.25, 0.25)
    )
    assert all(o.error is None for o in outcomes)
    records = read_manifest(manifest)
    assert [r.subject for r in records] == ["a1", "a2", "b1", "b2"]
    assert {r.subject: r.person for r in records} == persons
    split = {r.subject: r.split for r in records}
    assert split["a1"] == split["b1"] and set(split.values()) == {"train", "val", "test"}
    # --subjects picks series from whichever folder holds them.
    outcomes, _ = prepare_hcp([site_a, site_b], tmp_path / "picked", ["b2", "a1"])
    assert [o.subject for o in outcomes] == ["b2", "a1"]
    with pytest.raises(InputError, match="no such subject folder .nor under .*site-b"):
        prepare_hcp([site_a, site_b], tmp_path / "none", ["c1"])


def test_same_subject_id_in_two_folders_is_an_error_naming_both(phantom_set, tmp_path):
    site_a = _link_subjects(phantom_set, tmp_path / "site-a", ["s1", "s2"])
    site_b = _link_subjects(phantom_set, tmp_path / "site-b", ["s3", "s2"])
    with pytest.raises(InputError) as error:
        prepare_hcp([site_a, site_b], tmp_path / "out")
    assert str(site_a / "s2") in str(error.value) and str(site_b / "s2") in str(error.value)
    assert not (tmp_path / "out").exists(), "nothing is prepared before the ids are checked"
    outcomes, _ = prepare_hcp([site_a, site_b], tmp_path / "out", ["s3"])  # s2 not asked for
    assert [o.subject for o in outcomes] == ["s3"]


def test_persons_file_folder_column_names_the_folders_all_in_train(phantom_set, tmp_path):
    _link_subjects(phantom_set, tmp_path / "data" / "site-a", ["a1", "a2"])
    _link_subjects(phantom_set, tmp_path / "data" / "site-b", ["b1", "unlisted"])
    listing = tmp_path / "data" / "persons.csv"
    listing.write_text(
        "subject,person,folder\n# a comment\na1,P,site-a\na2,Q,site-a\n\nb1, P ,site-b\n"
    )
    roots, persons = read_persons_roots(listing)
    assert roots == [tmp_path / "data" / "site-a", tmp_path / "data" / "site-b"]
    assert persons == read_persons(listing) == {"a1": "P", "a2": "Q", "b1": "P"}
    outcomes, manifest = prepare_hcp(
        roots, tmp_path / "out", list(persons), persons=persons, ratios=(1, 0, 0)
    )
    records = read_manifest(manifest)
    assert [(r.subject, r.person, r.split) for r in records] == [
        ("a1", "P", "train"),
        ("a2", "Q", "train"),
        ("b1", "P", "train"),
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("s1,P\ns2,Q\n", {"s1": "P", "s2": "Q"}),  # no header, two columns
        ("person,folder,subject\nP,x,s1\n", {"s1": "P"}),  # header: columns by name
        ("subject,person,folder\ns1,P\n", {"s1": "P"}),  # folder left empty
        ("subject,person,folder\ns1,P,x,extra\n", "line 2: expected"),
        ("s1\n", "line 1: expected"),
        ("s1,P\ns1,Q\n", "line 2: subject 's1' is listed twice"),
        ("subject,site\ns1,x\n", "no `person` column"),
        ("subject,person\n", "expected lines"),
    ],
)
def test_read_persons_formats_and_errors(tmp_path, text, expected):
    listing = tmp_path / "persons.csv"
    listing.write_text(text)
    if isinstance(expected, dict):
        assert read_persons(listing) == expected
    else:
        with pytest.raises(InputError, match=expected):
            read_persons(listing)


def test_persons_file_without_folders_cannot_name_the_roots(tmp_path):
    listing = tmp_path / "persons.csv"
    listing.write_text("subject,person\ns1,P\n")
    with pytest.raises(InputError, match="no `folder` for 1 subject"):
        read_persons_roots(listing)


@pytest.mark.skipif(
    not (SHARED_DATA.parent / "more-sites").is_dir(), reason="../shared/data/more-sites is absent"
)
def test_real_more_sites_series_from_the_persons_file(tmp_path):
    roots, persons = read_persons_roots(SHARED_DATA.parent / "persons.csv")
    outcomes, manifest = prepare_hcp(
        roots, tmp_path, ["vanderbilt-601"], persons=persons, ratios=(1, 0, 0)
    )
    assert outcomes[0].error is None, outcomes[0].error
    (record,) = read_manifest(manifest)
    assert (record.person, record.split, record.bvalue) == ("E", "train", 2000.0)
    assert record.hr_shape == (46, 62, 40) and record.lr_shape == (23, 31, 20)
    assert record.hr_voxel_mm == (3.0, 3.0, 3.0) and record.lr_voxel_mm == (6.0, 6.0, 6.0)
    hr, _ = read_nifti(record.hr_tensor)
    mask, _ = read_nifti(record.hr_mask)
    fa, md = fa_md(hr)
    brain = mask > 0
    assert 0.6e-3 < np.median(md[brain]) < 1.0e-3
    assert np.isfinite(hr).all() and (fa[brain] >= 0).all() and (fa[brain] <= 1).all()


def _tensor_inputs(phantom_set, tmp_path, n=3):
    """`<subject>/dti_tensor.nii.gz` + nodif_brain_mask copied from the phantom's true tensors."""
    root, _ = phantom_set
    folders = []
    for i in range(1, n + 1):
        src = diffusion(root / "raw", f"phantom-{i:02d}")
        folder = tmp_path / "tensors" / f"subj{i}"
        folder.mkdir(parents=True)
        shutil.copy(src / "true_tensor.nii.gz", folder / "dti_tensor.nii.gz")
        shutil.copy(src / "nodif_brain_mask.nii.gz", folder / "nodif_brain_mask.nii.gz")
        folders.append(folder)
    return folders


def test_prepare_tensors_fsl_and_dipy_orders_agree(phantom_set, tmp_path):
    from dmri_revgan.data.degrade import block_mean, lr_affine
    from dmri_revgan.dti import fsl_to_dipy

    folders = _tensor_inputs(phantom_set, tmp_path)
    # One FSL-order volume gets a NaN voxel inside the brain: it must be repaired, not kept.
    tensor, image = read_nifti(folders[0] / "dti_tensor.nii.gz")
    mask, _ = read_nifti(folders[0] / "nodif_brain_mask.nii.gz")
    inside = tuple(np.argwhere(mask > 0)[len(np.argwhere(mask > 0)) // 2])
    tensor[inside] = np.nan
    save_nifti(folders[0] / "dti_tensor.nii.gz", tensor, image.affine)
    args = ["prepare", "tensors", *[str(f / "dti_tensor.nii.gz") for f in folders]]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "fsl")])
    assert result.exit_code == 0, result.output
    records = read_manifest(tmp_path / "fsl" / "data_manifest.csv")
    assert [r.subject for r in records] == ["subj1", "subj2", "subj3"]
    assert {r.split for r in records} == {"train", "val", "test"}
    assert records[0].repaired_voxels >= 1
    for r in records:
        hr, hr_img = read_nifti(r.hr_tensor)
        lr, lr_img = read_nifti(r.lr_tensor)
        hr_mask, _ = read_nifti(r.hr_mask)
        assert np.isfinite(hr).all() and np.isfinite(lr).all()
        np.testing.assert_allclose(lr_img.affine, lr_affine(hr_img.affine, 2), atol=1e-5)
        lr_mask, _ = read_nifti(r.lr_mask)
        expected = block_mean(hr * (hr_mask[..., None] > 0), 2)
        np.testing.assert_allclose(lr[lr_mask > 0], expected[lr_mask > 0], rtol=1e-4, atol=1e-9)
    # The same tensors in dipy order (with --order dipy) prepare to the same HR tensors.
    for f in folders[1:]:
        t, img = read_nifti(f / "dti_tensor.nii.gz")
        save_nifti(f / "dipy_tensor.nii.gz", fsl_to_dipy(t), img.affine)
    dipy_args = [str(f / "dipy_tensor.nii.gz") for f in folders[1:]]
    result = runner.invoke(
        app, ["prepare", "tensors", *dipy_args, "--order", "dipy", "--out", str(tmp_path / "dipy")]
    )
    assert result.exit_code == 0, result.output
    for subject in ("subj2", "subj3"):
        a, _ = read_nifti(tmp_path / "fsl" / subject / "hr_tensor.nii.gz")
        b, _ = read_nifti(tmp_path / "dipy" / subject / "hr_tensor.nii.gz")
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_prepare_tensors_bad_file_fails_alone(phantom_set, tmp_path):
    folders = _tensor_inputs(phantom_set, tmp_path, n=2)
    tensor, image = read_nifti(folders[1] / "dti_tensor.nii.gz")
    save_nifti(folders[1] / "dti_tensor.nii.gz", tensor[..., :5], image.affine)
    args = [str(f / "dti_tensor.nii.gz") for f in folders]
    result = runner.invoke(app, ["prepare", "tensors", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "subj2" in errors[0] and "5 volumes" in errors[0]
    assert [r.subject for r in read_manifest(tmp_path / "out" / "data_manifest.csv")] == ["subj1"]
    assert not (tmp_path / "out" / "subj2").exists()


def test_top_level_manifest_documents_the_format_and_points_at_the_demo_phantom():
    from pathlib import Path

    from dmri_revgan.data.manifest import SPLITS, assign_splits

    path = Path(__file__).resolve().parents[1] / "data_manifest.csv"
    text = path.read_text()
    assert text.startswith("#") and "FSL order" in text and "person" in text
    records = read_manifest(path)  # parses, persons within one split
    subjects = [f"phantom-{i:02d}" for i in range(1, 7)]
    assert [r.subject for r in records] == subjects
    # The split `make demo` draws (seed 0, default ratios) for its six phantom persons.
    expected = assign_splits(subjects, (0.7, 0.15, 0.15), 0)
    assert {r.subject: r.split for r in records} == expected
    assert set(expected.values()) == set(SPLITS)
    demo = path.parent / "demo_output" / "prepared"
    assert all(r.hr_tensor == (demo / r.subject / "hr_tensor.nii.gz") for r in records)


def test_slab_copies_thicken_the_slices_of_training_persons_only(phantom_set, tmp_path):
    from dmri_revgan.data.degrade import block_mean, lr_affine

    raw, _ = phantom_set
    root = tmp_path / "hcp"
    for name in ("a1", "b1"):
        shutil.copytree(raw / "raw" / "phantom-02", root / name)
    outcomes, manifest = prepare_hcp(
        root, tmp_path / "out", ratios=(1, 1, 0), persons={"a1": "A", "b1": "B"}, slabs=(2,)
    )
    assert all(o.error is None and not o.excluded for o in outcomes)
    records = {r.subject: r for r in read_manifest(manifest)}
    train = next(r for r in records.values() if r.split == "train" and not r.source)
    copy = records[f"{train.subject}-slab2"]
    assert copy.source == train.subject and copy.person == train.person and copy.split == "train"
    assert not any(r.source and r.split != "train" for r in records.values())
    assert copy.hr_voxel_mm[:2] == train.hr_voxel_mm[:2]
    assert copy.hr_voxel_mm[2] == pytest.approx(2 * train.hr_voxel_mm[2])
    assert copy.lr_voxel_mm[2] == pytest.approx(2 * train.lr_voxel_mm[2])
    hr, image = read_nifti(train.hr_tensor)
    thick, thick_image = read_nifti(copy.hr_tensor)
    assert thick.shape[2] == hr.shape[2] // 4 * 2  # slabs of 2, then cropped to a multiple of r
    np.testing.assert_allclose(thick_image.affine, lr_affine(image.affine, (1, 1, 2)), atol=1e-5)
    mean = block_mean(hr, (1, 1, 2))[:, :, : thick.shape[2]]
    mask, _ = read_nifti(copy.hr_mask)
    inside = mask > 0
    assert np.median(np.abs(thick - mean)[inside]) < 0.1 * np.median(np.abs(mean)[inside])


def test_slabs_of_an_anisotropic_series_are_skipped_and_bad_slabs_refused(phantom_set, tmp_path):
    raw, _ = phantom_set
    root = tmp_path / "hcp"
    shutil.copytree(raw / "raw" / "phantom-02", root / "thick")
    folder = diffusion(root, "thick")
    for name in ("data.nii.gz", "nodif_brain_mask.nii.gz"):
        data, image = read_nifti(folder / name)
        save_nifti(folder / name, data, image.affine @ np.diag([1, 1, 2.5, 1]), image.header)
    outcomes, manifest = prepare_hcp(root, tmp_path / "out", ratios=(1, 0, 0), slabs=(3,))
    assert "not near-isotropic" in next(o for o in outcomes if o.subject == "thick-slab3").excluded
    assert [r.subject for r in read_manifest(manifest)] == ["thick"]
    with pytest.raises(InputError, match="slab"):
        prepare_hcp(root, tmp_path / "out", slabs=(1,))
    result = CliRunner().invoke(
        app,
        ["prepare", "hcp", "--hcp-root", str(root), "--out", str(tmp_path / "o"), "--slabs", "x"],
    )
    assert result.exit_code != 0 and "--slabs" in result.output
