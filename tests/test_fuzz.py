"""Fuzzing the readers of user data (hypothesis): mutated NIfTI headers, gradient tables,
safetensors model files, NRRD headers and manifests either read correctly or fail with the one
:class:`InputError` ("<file>: <problem>") — never another exception, never a huge allocation,
never a change to the input. ``make test`` runs a bounded number of examples per reader; the
``slow`` variants run 1,000 each (``make test-all``)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dmri_revgan.errors import InputError  # noqa: E402

FAST, SLOW = 40, 1000
_MEMORY_CEILING_KIB = 512 * 1024  # growth of the process's peak RSS over a whole fuzz run


def _mutations(data: bytes, max_edits: int = 4) -> st.SearchStrategy[bytes]:
    """Byte flips, overwrites with extreme values, truncation and appended junk."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, max_edits))):
            kind = draw(st.sampled_from(["flip", "set", "truncate", "append", "extreme"]))
            if not out:
                break
            i = draw(st.integers(0, len(out) - 1))
            if kind == "flip":
                out[i] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set":
                out[i] = draw(st.integers(0, 255))
            elif kind == "truncate":
                del out[i:]
            elif kind == "append":
                out += draw(st.binary(min_size=1, max_size=64))
            else:  # a 4- or 8-byte field set to an extreme: huge, negative, NaN, Inf
                value = draw(st.sampled_from([
                    b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00\x00\xc0\x7f",
                    b"\x00\x00\x80\x7f", b"\xff" * 8, b"\x00\x00\x00\x00\x00\x00\xf8\x7f",
                ]))  # fmt: skip
                out[i : i + len(value)] = value
        return bytes(out)

    return mutate()


def _fuzz(path: Path, read: Callable[[Path], object]) -> None:
    """Read ``path``: success or one-line InputError naming it (or, for a b-table, its partner
    file: a mutated b-value can leave too few directions), within 5 s; the file is unchanged."""
    before = path.read_bytes()
    start = time.perf_counter()
    try:
        read(path)
    except InputError as exc:
        assert str(exc).startswith((str(path), str(path.parent / "seed."))), exc
        assert "\n" not in str(exc)
    assert time.perf_counter() - start < 5.0
    assert path.read_bytes() == before


def _run(examples: int, tmp_path: Path, name: str, seed: bytes, read) -> None:
    """``examples`` mutations of ``seed`` read by ``read``; the fast run is derandomised (the
    same examples every time, so CI cannot flake), the slow one draws new ones."""
    path = tmp_path / name
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @settings(max_examples=examples, deadline=None, database=None,
              derandomize=examples <= FAST,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(_mutations(seed))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        _fuzz(path, read)

    check()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss < _MEMORY_CEILING_KIB


def _nifti_seed(tmp_path: Path) -> bytes:
    image = nib.Nifti1Image(np.random.default_rng(0).random((6, 5, 4, 6), np.float32), np.eye(4))
    path = tmp_path / "seed.nii"
    nib.save(image, path)
    return path.read_bytes()


def _read_nifti(path: Path) -> object:
    from dmri_revgan.io import read_nifti

    return read_nifti(path, ndim=4)


def _tables(tmp_path: Path) -> tuple[bytes, bytes]:
    g = np.random.default_rng(1).normal(size=(7, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[0] = 0
    np.savetxt(tmp_path / "seed.bval", np.r_[0, [1000] * 6][None], fmt="%g")
    np.savetxt(tmp_path / "seed.bvec", g.T, fmt="%.6f")
    return (tmp_path / "seed.bval").read_bytes(), (tmp_path / "seed.bvec").read_bytes()


def _model_seed(tmp_path: Path) -> bytes:
    from dmri_revgan.config import Config
    from dmri_revgan.model import build_generator, save_model

    cfg = Config(name="fuzz")
    cfg.model.width, cfg.model.depth, cfg.model.norm = 4, 1, "none"
    path = tmp_path / "seed.safetensors"
    save_model(path, build_generator(cfg), cfg, [7e-4] * 6, [3e-4] * 6)
    return path.read_bytes()


def _load_model(path: Path) -> object:
    from dmri_revgan.model import load_model

    return load_model(path)


def _nrrd_seed(tmp_path: Path) -> bytes:
    header = (
        "NRRD0005\ntype: float\ndimension: 4\nspace: right-anterior-superior\n"
        "sizes: 7 4 4 3\nspace directions: none (2,0,0) (0,2,0) (0,0,2)\n"
        "kinds: list domain domain domain\nendian: little\nencoding: raw\n"
        "space origin: (0,0,0)\nmeasurement frame: (1,0,0) (0,1,0) (0,0,1)\n"
        "modality:=DWMRI\nDWMRI_b-value:=1000\n"
    )
    g = np.random.default_rng(2).normal(size=(7, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[0] = 0
    header += "".join(
        f"DWMRI_gradient_{i:04d}:={x:.6f} {y:.6f} {z:.6f}\n" for i, (x, y, z) in enumerate(g)
    )
    data = np.random.default_rng(3).random((3, 4, 4, 7), np.float32) * 1000 + 10
    return header.encode() + b"\n" + data.tobytes()


def _read_nrrd(path: Path) -> object:
    from dmri_revgan.data.nrrd import read_nrrd_dwi

    return read_nrrd_dwi(path)


def _manifest_seed(tmp_path: Path) -> bytes:
    from dmri_revgan.data.manifest import SubjectRecord, write_manifest

    for name in ("hr.nii.gz", "lr.nii.gz", "hm.nii.gz", "lm.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    record = SubjectRecord(
        "s1", "P", "train", str(tmp_path / "hr.nii.gz"), str(tmp_path / "lr.nii.gz"),
        str(tmp_path / "hm.nii.gz"), str(tmp_path / "lm.nii.gz"), "4x4x4", "2x2x2", "2x2x2",
        "4x4x4", 2, 1000.0, 0,
    )  # fmt: skip
    write_manifest(tmp_path / "seed.csv", [record])
    return (tmp_path / "seed.csv").read_bytes()


def _read_manifest(path: Path) -> object:
    from dmri_revgan.data.manifest import read_manifest

    return read_manifest(path)


def _cases(tmp_path: Path) -> dict[str, tuple[str, bytes, Callable[[Path], object]]]:
    bval, bvec = _tables(tmp_path)

    def read_bval(path: Path) -> object:
        from dmri_revgan.io import read_bvals_bvecs

        return read_bvals_bvecs(path, tmp_path / "seed.bvec", 7)

    def read_bvec(path: Path) -> object:
        from dmri_revgan.io import read_bvals_bvecs

        return read_bvals_bvecs(tmp_path / "seed.bval", path, 7)

    return {
        "nifti": ("dwi.nii", _nifti_seed(tmp_path), _read_nifti),
        "bval": ("dwi.bval", bval, read_bval),
        "bvec": ("dwi.bvec", bvec, read_bvec),
        "model": ("model.safetensors", _model_seed(tmp_path), _load_model),
        "nrrd": ("dwi.nrrd", _nrrd_seed(tmp_path), _read_nrrd),
        "manifest": ("data_manifest.csv", _manifest_seed(tmp_path), _read_manifest),
    }


READERS = ["nifti", "bval", "bvec", "model", "nrrd", "manifest"]


@pytest.mark.parametrize("reader", READERS)
def test_mutated_inputs_read_or_fail_in_one_line(reader, tmp_path):
    name, seed, read = _cases(tmp_path)[reader]
    _run(FAST, tmp_path, name, seed, read)


@pytest.mark.slow
@pytest.mark.parametrize("reader", READERS)
def test_a_thousand_mutations_per_reader(reader, tmp_path):
    name, seed, read = _cases(tmp_path)[reader]
    _run(SLOW, tmp_path, name, seed, read)
