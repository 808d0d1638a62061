"""Atomic file and folder writes: a reader, or a resumed job, never sees a half-written output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pudding.core.errors import OutputError
from pudding.core.options import OptionGroup


def print_line(text: str) -> None:
    """The default progress log of long jobs: the line on stdout, flushed (it reads well in a log file too)."""
    print(text, flush=True)


def default_mode(directory: bool = False) -> int:
    """The permission bits a plain ``open``/``mkdir`` would give under the current umask.

    ``tempfile`` creates private files (0600) and folders (0700); outputs renamed from them into place would stay
    private, so a colleague or a container running as another user could not read a results table or a bundle.
    """
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    A writer killed between the two leaves its temporary file behind; the next write of the same path removes it
    (one writer per path, as for every output here).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, default_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: object) -> None:
    """JSON flavour of :func:`atomic_write_text`."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors flavour of :func:`atomic_write_bytes` (``safetensors.torch.save_file`` makes 0600 files)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata=metadata))


@contextmanager
def atomic_folder(output: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary sibling (yielded), then swap it into place at ``output``.

    An existing ``output`` is moved aside first and deleted once the new one is in place, so a crash leaves the old
    or the new folder (plus a ``.<name>.old-*`` sibling), never a mix. If the body raises, nothing changes. Whether
    an existing ``output`` may be replaced is the caller's decision, made before.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*output.parent.glob(f".{output.name}.tmp-*"), *output.parent.glob(f".{output.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a writer killed mid-save (one writer per output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    old = None
    try:
        tmp.chmod(default_mode(directory=True))
        yield tmp
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, old / output.name)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@dataclass
class OutputOptions(OptionGroup):
    """Where the result goes. The path itself is checked by :func:`check_output` before any work.

    Args:
        output: Where the result is written, atomically.
        overwrite: Replace an existing ``output`` (without it an existing output is an error, found before any
            work).
    """

    output: str | None = None
    overwrite: bool = False

    def check_outputs(self, *suffixes: str) -> list[Path]:
        """``output`` with each of ``suffixes`` (a result and the files written beside it), each checked by
        :func:`check_output`; no suffix: ``output`` itself."""
        if self.output is None:
            return []
        path = Path(self.output)
        paths = [path.with_suffix(s) for s in suffixes] if suffixes else [path]
        return [check_output(p, self.overwrite) for p in paths]


def check_output(path: str | os.PathLike[str], overwrite: bool = False, option: str = "output") -> Path:
    """An output path that can be written: its nearest existing parent is a writable folder, and it does not
    exist yet unless ``overwrite``. Returns it as a :class:`Path`."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise OutputError(f"option {option}: {path} exists; pass --overwrite true to replace it, or choose another")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"option {option}: cannot create {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"option {option}: cannot create {path}: folder {parent} is not writable")
    return path
