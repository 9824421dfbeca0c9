"""Writing files, and checking the paths a user gave before any slow work starts.

`atomic_write` writes a temporary file beside the target, then renames it over the target, so a
reader never sees a half-written file and a crash never destroys the previous version. The file
gets the permissions `open()` would give (0o666 less the umask) unless a mode is asked for.

`check_input_file`, `check_output_file`, `check_output_folder` and `image_outputs` are what every
command line front end calls on its paths before loading a model: each raises `PathError` (a
`ValueError`) with a message that names the user's path, or returns the path to use.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from pathlib import Path

PRIVATE = 0o600  # the mode of files that hold other people's pictures, or secrets

# Image file suffixes and the format each one means.
IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
FORMAT_ALIASES = {"jpg": "jpeg"}


class PathError(ValueError):
    """A path the user gave cannot be used; the message names it and says why."""


def atomic_write(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` (making its folders); `mode` defaults to 0o666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0o600; set the final mode before the file has a public name.
        os.chmod(tmp, 0o666 & ~current_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _umask_once()


@functools.cache
def _umask_once() -> int:
    # Setting the umask to read it is racy across threads, so it is done once per process.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_input_file(path: str | Path) -> Path:
    """`path` is an existing file this process can read."""
    path = Path(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise PathError(f"{path} does not exist") from None
    except OSError as e:
        raise PathError(f"cannot read {path}: {_reason(e)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise PathError(f"{path} is a directory, not a file")
    if stat.S_ISREG(info.st_mode):  # opening a pipe or device could block; only files are tried
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise PathError(f"cannot read {path}: {_reason(e)}") from None
    return path


def check_output_folder(folder: str | Path, target: str | Path | None = None) -> Path:
    """Files can be written in `folder`: it is a writable directory, or it does not exist yet
    and its nearest existing parent is one (then `atomic_write` makes it). `target`, the file
    to be written there, is the path error messages name (default: the folder itself)."""
    folder = Path(folder)
    subject = Path(target) if target is not None else folder
    for existing in (folder, *folder.parents):
        try:
            info = existing.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise PathError(f"cannot write {subject}: {_reason(e)} on {existing}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise PathError(f"cannot write {subject}: {existing} is a file, not a directory")
        # os.access says yes to root even where writing fails (/sys, /proc, read-only mounts),
        # so a file is made and removed.
        try:
            fd, probe = tempfile.mkstemp(dir=existing, prefix=".openkontext-check.")
        except OSError as e:
            raise PathError(
                f"cannot write {subject}: cannot create files in {existing} ({_reason(e)})"
            ) from None
        os.close(fd)
        os.unlink(probe)
        return folder
    raise PathError(f"cannot write {subject}: none of its parent directories exists")


def check_output_file(path: str | Path) -> Path:
    """`path` can be written as a regular file: not a directory or a device, and its folder is
    writable (see `check_output_folder`)."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path} is a directory; give a file name inside it")
    if path.exists() and not path.is_file():
        raise PathError(f"cannot write {path}: it exists and is not a regular file")
    check_output_folder(path.parent, target=path)
    return path


def image_outputs(
    path: str | Path, fmt: str | None, formats: tuple[str, ...], count: int = 1
) -> tuple[list[Path], str]:
    """The `count` image files to write for the user's `path`, checked, and their format.

    The format comes from the suffix (.png, .jpg/.jpeg, .webp); `fmt`, when given, must agree
    with it. A name without a suffix gets `fmt`'s (the first of `formats` when neither says).
    Other suffixes are refused rather than written with bytes that do not match them. For
    count > 1 the files are NAME_1.EXT, NAME_2.EXT, ...
    """
    path = Path(path)
    fmt = FORMAT_ALIASES.get(fmt, fmt) if fmt else None
    if fmt is not None and fmt not in formats:
        raise PathError(f"format must be one of {', '.join(formats)}, got {fmt!r}")
    if path.is_dir():
        raise PathError(
            f"{path} is a directory; give a file name such as "
            f"{path / ('out.' + (fmt or formats[0]))}"
        )
    if not path.suffix:
        fmt = fmt or formats[0]
        path = path.with_name(f"{path.name}.{fmt}")
    named = IMAGE_SUFFIXES.get(path.suffix.lower())
    if named not in formats:
        allowed = ", ".join(s for s, f in IMAGE_SUFFIXES.items() if f in formats)
        raise PathError(
            f"cannot write {path}: the name must end in {allowed} (or have no "
            "suffix) to say the image format"
        )
    if fmt is not None and fmt != named:
        raise PathError(
            f"--format {fmt} does not match {path}, a {named} file name; name the "
            f"file {path.with_suffix('.' + fmt)} or leave out --format"
        )
    if count > 1:
        paths = [path.with_name(f"{path.stem}_{i + 1}{path.suffix}") for i in range(count)]
    else:
        paths = [path]
    return [check_output_file(p) for p in paths], named


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()
