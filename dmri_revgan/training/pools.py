"""GAN image pools for the unpaired discriminators."""

from __future__ import annotations

import torch


class ImagePool:
    """Buffer of past generated images for the unpaired discriminators (Shrivastava et al. 2017).

    Once full, each query returns, with probability ½, a stored image (replacing it by the new one)
    and otherwise the new image. Uses the torch RNG, so it is reproducible and checkpointed.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(len(self.images), ()))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)
