"""``infer`` for 2D models: translate PNG/JPEG images or folders of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dmri_revgan.errors import InputError
from dmri_revgan.model import LoadedModel


def translate_images(
    source: Path,
    model: LoadedModel,
    output: Path | None = None,
    direction: str = "up",
    device: str = "cpu",
) -> list[Path]:
    """The ``infer`` command for 2D models: translate a PNG/JPEG image or a folder of them with
    F ("up": the config's A→B) or G ("down": B→A), at the config's ``image_size``.

    A file ``photo.png`` → ``photo_AtoB.png`` beside it (``_BtoA`` for down); a folder ``dir`` →
    ``dir_AtoB/`` with the same file names as PNG. Every input is read before anything is
    written; each output is written to a temporary file and renamed.
    """
    from PIL import Image

    from dmri_revgan.data.images import EXTENSIONS, list_images, read_rgb, to_tensor, to_uint8
    from dmri_revgan.io import atomic_path

    d = model.cfg.data
    tag = d.direction if direction == "up" else {"AtoB": "BtoA", "BtoA": "AtoB"}[d.direction]
    if source.is_dir():
        files = list_images(source)
        folder = output or source.parent / f"{source.name}_{tag}"
        targets = [folder / f"{f.stem}.png" for f in files]
    else:
        if source.suffix.lower() not in EXTENSIONS:
            raise InputError(source, f"not a {'/'.join(EXTENSIONS)} image for a 2D model")
        files = [source]
        targets = [output or source.with_name(f"{source.stem}_{tag}.png")]
    resolved = {f.resolve() for f in files}
    clash = [t for t in targets if t.resolve() in resolved]
    if clash:
        raise InputError(clash[0], "output path equals an input; choose another --output")
    size = d.image_size
    images = [
        np.asarray(Image.fromarray(read_rgb(f)).resize((size, size), Image.BICUBIC)) for f in files
    ]
    run = model.gen.forward if direction == "up" else model.gen.reverse
    outputs = []
    with torch.inference_mode():
        for image in images:
            x = to_tensor(np.array(image))[None].to(device)
            outputs.append(to_uint8(run(x)[0]))
    for target, result in zip(targets, outputs, strict=True):
        with atomic_path(target) as tmp:
            Image.fromarray(result).save(tmp)
    return targets
