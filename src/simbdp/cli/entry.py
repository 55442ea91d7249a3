"""The ``simbdp`` command's entry point.

``simbdp ingest`` starts its batch worker first thing, before the command's own imports
(typer, rich, pydantic, the CLI's modules): the worker's imports (pyarrow, DuckDB, the job
code) then run beside them instead of after them.
"""

from __future__ import annotations

import os
import sys

#: :data:`simbdp.home.PRIVATE_UMASK`, set here before the worker starts (importing
#: ``simbdp.home`` would load the profile models first)
PRIVATE_UMASK = 0o077


def main() -> None:
    """Run the ``simbdp`` command."""
    if sys.argv[1:2] == ["ingest"]:
        os.umask(PRIVATE_UMASK)  # as every command does: the worker creates private files
        from simbdp.batch.worker import prestart

        prestart(1)
    from simbdp.cli.main import app

    app()
