"""The ``dmri-revgan`` command line: one small module per verb group, wired together in ``app``."""

from dmri_revgan.cli.app import app

__all__ = ["app"]
