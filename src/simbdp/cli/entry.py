"""The ``simbdp`` command's entry point.

``simbdp ingest`` starts its batch worker first thing, before the command's own imports
(typer, rich, pydantic, the CLI's modules): the worker's imports (pyarrow, DuckDB, the job
code) then run beside them instead of after them. It runs :data:`simbdp.cli.ingest.ingest_app`,
the command alone: the other commands' modules are not imported.
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
        from simbdp.cli.ingest import ingest_app

        try:
            ingest_app()
        except SystemExit as e:
            _exit_now(e.code)
        return
    from simbdp.cli.main import app

    app()


def _exit_now(code: object) -> None:
    """Exit with ``code`` once the output is flushed, without the interpreter's teardown
    (freeing every module's objects, atexit): ``simbdp ingest`` has closed its state store
    and its workers by then, and its records and answer are written."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import logging

    logging.shutdown()  # the log file's last lines
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code or 0)
