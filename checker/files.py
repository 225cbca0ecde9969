"""Expand file and directory arguments the same way for rule files and trace files."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


def files_under(paths: Iterable[Path], suffixes: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """Each file given, and every file with one of ``suffixes`` under each directory.

    Directories are searched recursively and their files taken in path order, so results
    never depend on the file system's listing order. Hidden entries (a leading ``.``) are
    skipped: a Kubernetes ConfigMap volume keeps a second copy of every file in
    ``..<timestamp>/``. Returns (files, paths that do not exist).
    """
    files: list[Path] = []
    missing: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in suffixes and p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(path)
    return files, missing
