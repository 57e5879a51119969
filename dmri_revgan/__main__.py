"""`python -m dmri_revgan` (used by `torchrun -m dmri_revgan ...`)."""

from dmri_revgan.cli import app

app()
