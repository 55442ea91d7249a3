"""Watch every tenant's staging folder with watchdog; events only hint, the rescan decides."""

from __future__ import annotations

import queue
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

__all__ = ["StagingWatcher"]


class _Handler(FileSystemEventHandler):
    def __init__(self, tenant: str, events: queue.SimpleQueue[tuple[str, Path, str]]):
        self.tenant, self.events = tenant, events

    def on_created(self, event: FileSystemEvent) -> None:
        # a hint only: a hard link or a copy-then-close also starts with a creation
        if not event.is_directory:
            self.events.put((self.tenant, Path(str(event.src_path)), "seen"))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.events.put((self.tenant, Path(str(event.src_path)), "writing"))

    def on_closed(self, event: FileSystemEvent) -> None:
        # closed after writing (inotify IN_CLOSE_WRITE): the writer is done
        if not event.is_directory:
            self.events.put((self.tenant, Path(str(event.src_path)), "complete"))

    def on_moved(self, event: FileSystemEvent) -> None:
        # a rename into the folder means the writer finished (the *.part convention)
        if not event.is_directory:
            self.events.put((self.tenant, Path(str(event.dest_path)), "complete"))


class StagingWatcher:
    """Puts ``(tenant, path, "seen" | "writing" | "complete")`` on ``events``."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[tuple[str, Path, str]] = queue.SimpleQueue()
        self._observer = Observer(timeout=0.1)  # stops within 0.1 s, not 1 s
        self._watched: set[Path] = set()

    def watch(self, tenant: str, folder: Path) -> None:
        if folder not in self._watched:
            self._observer.schedule(_Handler(tenant, self.events), str(folder), recursive=False)
            self._watched.add(folder)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def drain(self) -> list[tuple[str, Path, str]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out
