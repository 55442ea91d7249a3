"""``simbdp keyset`` and ``simbdp encrypt``: a tenant's keys and encrypted files.

The tenant makes a keyset, keeps a copy and hands one to the operator, who stores it outside
the tenants' folders (``home/keys/<tenant>.json``, mode 0600) and names it in the profile
(``encryption.keyset``). Files are then encrypted on the tenant's side, before they leave it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from simbdp.cli.common import EXIT_USAGE, console, err_console

__all__ = ["encrypt", "keyset_app"]

keyset_app = typer.Typer(help="Make, rotate and show a tenant's keyset for encrypted input "
                              "(files and messages).", no_args_is_help=True)
KEYSET = typer.Argument(..., help="the keyset file (JSON, written with mode 0600)")


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error[/red] {escape(message)}", highlight=False)
    return typer.Exit(EXIT_USAGE)


def _describe(path: Path) -> None:
    from simbdp.crypto.keyset import parse_keyset, read_keyset_doc

    ks = parse_keyset(read_keyset_doc(path), path)
    for part, ids in (("files", ks.file_key_ids), ("messages", ks.message_key_ids)):
        old = f"; also accepted: {', '.join(map(str, ids[1:]))}" if len(ids) > 1 else ""
        console.print(f"{part}: primary key id {ids[0]}{old}")


@keyset_app.command("new")
def new(path: Path = KEYSET) -> None:
    """Make a keyset: one AES256_GCM_HKDF_1MB key for files, one AES256_GCM key for messages."""
    from simbdp.crypto.keyset import new_keyset, save_keyset

    try:
        save_keyset(new_keyset(), path)
    except FileExistsError as e:
        raise _fail(f"{e}: rotate it with `simbdp keyset rotate`") from e
    console.print(f"wrote {escape(str(path))} (mode 0600)")
    _describe(path)


@keyset_app.command("rotate")
def rotate(path: Path = KEYSET) -> None:
    """Add a new primary key; the previous one is still accepted until `keyset retire`."""
    from simbdp.crypto.keyset import read_keyset_doc, rotate_keyset, save_keyset

    save_keyset(rotate_keyset(read_keyset_doc(path)), path, overwrite=True)
    _describe(path)


@keyset_app.command("retire")
def retire(path: Path = KEYSET) -> None:
    """Drop every key but the primary: files and messages sealed with an older key are then
    rejected."""
    from simbdp.crypto.keyset import read_keyset_doc, retire_keyset, save_keyset

    save_keyset(retire_keyset(read_keyset_doc(path)), path, overwrite=True)
    _describe(path)


@keyset_app.command("show")
def show(path: Path = KEYSET) -> None:
    """The key ids of a keyset (never the keys)."""
    _describe(path)


def encrypt(file: Path = typer.Argument(..., help="the file to encrypt"),
            key: Path = typer.Option(..., "--key", "-k", help="the tenant's keyset file"),
            output: Path | None = typer.Option(None, "--output", "-o",
                                               help="where to write (default: FILE.enc)")
            ) -> None:
    """Encrypt FILE for ingestion (Tink StreamingAead, AES256_GCM_HKDF_1MB), streaming: drop
    or push the FILE.enc it writes."""
    from simbdp.crypto.files import encrypt_file
    from simbdp.crypto.keyset import parse_keyset, read_keyset_doc

    if not file.is_file():
        raise _fail(f"{file}: no such file")
    dest = output or file.with_name(file.name + ".enc")
    if dest.resolve() == file.resolve():
        raise _fail(f"{dest}: the output would overwrite the input")
    size = encrypt_file(parse_keyset(read_keyset_doc(key), key), file, dest)
    console.print(f"wrote {escape(str(dest))} ({size} bytes)")
