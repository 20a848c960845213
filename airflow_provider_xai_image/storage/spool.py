"""The spool: private folders on local disk where images wait, verified whole, until they are stored.

Local disk is shared with other users, so the spool root (``[xai_image] spool_dir``, default
``<temp folder>/airflow-xai-image-<uid>``) and each task instance's folder in it are this user's own:
created ``0700``, and checked with ``lstat`` before every use (a directory, not a link, owned by this
user, no access for group or others). A folder that fails the check is refused, never written
through. Files are created exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``, ``0600``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from contextlib import suppress
from typing import IO

from airflow_provider_xai_image.exceptions import XaiStorageConfigError
from airflow_provider_xai_image.settings import SECTION, spool_root

_PRIVATE_MODE = 0o700
_EXCLUSIVE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY


def check_private_folder(path: str) -> bool:
    """Whether ``path`` exists, as a private folder of this user; refuse anything else there.

    :param path: A spool folder.
    :raises XaiStorageConfigError: ``path`` is a link, not a folder, someone else's, or open to others.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder"
    elif info.st_uid != os.geteuid():
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
    elif info.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}, not 0700"
    if problem:
        raise XaiStorageConfigError(
            f"The spool folder {path} {problem}: it is not used, since another local user could read or "
            f"replace images through it. Remove it, or set [{SECTION}] spool_dir to a folder "
            "of this user only."
        )
    return True


def make_private_folder(path: str) -> None:
    """Create ``path`` as a private folder of this user (``0700``), or check the one already there.

    :param path: A spool folder (its parent is created when missing).
    :raises XaiStorageConfigError: see :func:`check_private_folder`.
    """
    if check_private_folder(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with suppress(FileExistsError):  # made meanwhile by another thread or process: checked below
        os.mkdir(path, _PRIVATE_MODE)
    check_private_folder(path)


class Spool:
    """One task instance's spool folder: ``<spool root>/<digest of its output folder URI>``.

    :param folder_uri: The task instance's output folder.
    """

    def __init__(self, folder_uri: str) -> None:
        self.root = spool_root()
        self.path = os.path.join(self.root, hashlib.sha256(folder_uri.encode()).hexdigest()[:16])

    def make(self) -> str:
        """Create the folder (and the root) privately, or check them; return the folder's path."""
        make_private_folder(self.root)
        make_private_folder(self.path)
        return self.path

    def create(self, name: str) -> IO[bytes]:
        """A new file ``name`` in the folder (made privately when missing), opened for writing: never an
        existing file, never through a link (``O_CREAT|O_EXCL|O_NOFOLLOW``, ``0600``).

        :param name: The file's name.
        """
        path = os.path.join(self.path, name)
        self.make()
        try:
            descriptor = os.open(path, _EXCLUSIVE_FLAGS, 0o600)
        except FileNotFoundError:  # the empty folder was removed (a run ending) between making it and the file
            self.make()
            descriptor = os.open(path, _EXCLUSIVE_FLAGS, 0o600)
        return os.fdopen(descriptor, "wb")

    def remove_if_empty(self) -> None:
        """Remove the folder once nothing waits in it (a billed image that is not stored yet stays)."""
        with suppress(OSError):  # gone already, or not empty
            os.rmdir(self.path)
