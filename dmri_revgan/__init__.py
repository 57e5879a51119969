"""dmri-revgan: reversible GANs for memory-efficient diffusion MRI super-resolution."""

__version__ = "0.1.0"
