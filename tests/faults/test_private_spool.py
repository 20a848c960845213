"""The spool against other local users: a folder someone else made (or a link) is refused before any
request and never written through; only whole images are published from it, never a link or a cut
download; and no spool folder stays behind, on the worker or on the triggerer. Tests run as root, so
"another user" is uid 65534 (nobody)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from faults_support import context, generation_posts, images_in, manifest_of
from test_trigger_runs_twice import deferred_trigger, first_event, operator

from airflow_provider_xai_image.exceptions import XaiStorageConfigError
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.storage import image_store
from airflow_provider_xai_image.storage.image_store import ImageStore
from airflow_provider_xai_image.storage.layout import task_output_path
from airflow_provider_xai_image.storage.spool import Spool
from airflow_provider_xai_image.testing import XaiEmulator

NOBODY = 65534
#: A whole JPEG another user would like published (or overwritten).
VICTIM_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"private" * 100 + b"\xff\xd9"


@pytest.fixture
def spool_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``[xai_image] spool_dir`` of the test: a path under ``tmp_path`` that does not exist yet."""
    root = tmp_path / "spool"
    monkeypatch.setenv("AIRFLOW__XAI_IMAGE__SPOOL_DIR", str(root))
    return root


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-owned 0600 file outside the spool."""
    path = tmp_path / "victim" / "secret.jpg"
    path.parent.mkdir()
    path.write_bytes(VICTIM_BYTES)
    path.chmod(0o600)
    return path


def generate(output_uri: str, **kwargs: Any) -> XaiGenerateImagesOperator:
    return XaiGenerateImagesOperator(task_id="generate", prompt="a paper boat", output_uri=output_uri, **kwargs)


def task_spool(output_uri: str) -> Spool:
    return ImageStore(task_output_path(output_uri, "manual__faults", "generate", -1), None).spool_folder  # type: ignore[arg-type]


def everything_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


# --------------------------------------------------------------------------- a spool made by someone else


def root_of_nobody(root: Path, victim: Path, output_uri: str) -> Path:
    root.mkdir(mode=0o700)
    os.chown(root, NOBODY, NOBODY)
    return root


def root_open_to_all(root: Path, victim: Path, output_uri: str) -> Path:
    root.mkdir()
    root.chmod(0o777)
    return root


def root_is_a_link(root: Path, victim: Path, output_uri: str) -> Path:
    root.symlink_to(victim.parent, target_is_directory=True)
    return victim.parent


def task_folder_is_a_link(root: Path, victim: Path, output_uri: str) -> Path:
    root.mkdir(mode=0o700)
    Path(task_spool(output_uri).path).symlink_to(victim.parent, target_is_directory=True)
    return victim.parent


def task_folder_of_nobody(root: Path, victim: Path, output_uri: str) -> Path:
    root.mkdir(mode=0o700)
    folder = Path(task_spool(output_uri).path)
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    return folder


PLANTED: list[tuple[Callable[[Path, Path, str], Path], str]] = [
    (root_of_nobody, "belongs to uid 65534"),
    (root_open_to_all, "has mode 0777, not 0700"),
    (root_is_a_link, "is a symbolic link"),
    (task_folder_is_a_link, "is a symbolic link"),
    (task_folder_of_nobody, "belongs to uid 65534"),
]


@pytest.mark.parametrize(("plant", "reason"), PLANTED, ids=[plant.__name__ for plant, _ in PLANTED])
@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_a_spool_folder_made_by_someone_else_is_refused_before_any_request(
    emulator: XaiEmulator,
    output_uri: str,
    spool_root: Path,
    victim: Path,
    plant: Callable[[Path, Path, str], Path],
    reason: str,
    deferrable: bool,
) -> None:
    planted = plant(spool_root, victim, output_uri)
    before = everything_under(planted)

    with pytest.raises(AirflowFailException) as raised:
        generate(output_uri, deferrable=deferrable).execute(context())

    assert isinstance(raised.value.__cause__, XaiStorageConfigError)
    assert f"The spool folder {spool_root}" in str(raised.value)
    assert reason in str(raised.value)
    assert "[xai_image] spool_dir" in str(raised.value)  # says how to fix it
    assert generation_posts(emulator) == 0
    assert everything_under(planted) == before  # nothing written through it
    assert victim.read_bytes() == VICTIM_BYTES


# --------------------------------------------------------------------------- what is published from the spool


def test_only_whole_images_are_published_from_the_spool_never_a_link(
    emulator: XaiEmulator, output_uri: str, out: Path, spool_root: Path, victim: Path
) -> None:
    folder = Path(task_spool(output_uri).make())
    assert (spool_root.stat().st_mode & 0o777, folder.stat().st_mode & 0o777) == (0o700, 0o700)
    fingerprint = "0123456789ab"
    (folder / f"p00003-i00-{fingerprint}.jpg").symlink_to(victim)  # a whole image, through a link
    (folder / f"p00003-i01-{fingerprint}.jpg").write_bytes(b"not an image at all")
    (folder / f"p00003-i02-{fingerprint}.jpg").write_bytes(VICTIM_BYTES[: len(VICTIM_BYTES) // 2])  # cut
    (folder / f"p00003-i03-{fingerprint}.png").write_bytes(VICTIM_BYTES)  # a JPEG under a PNG name
    (folder / f"p00003-i04-{fingerprint}.part").write_bytes(VICTIM_BYTES)  # a download a kill cut short
    (folder / f"p00003-i05-{fingerprint}.jpg").write_bytes(VICTIM_BYTES)  # whole: an earlier try's, published

    ctx = context()
    [uri] = generate(output_uri).execute(ctx)

    published = sorted(path.name for path in images_in(out))
    assert published == sorted([uri.rsplit("/", 1)[-1], f"p00003-i05-{fingerprint}.jpg"])
    assert not [path for path in out.rglob("*") if path.is_symlink() or ".part" in path.name]
    assert victim.read_bytes() == VICTIM_BYTES
    assert (victim.stat().st_mode & 0o777, victim.is_symlink()) == (0o600, False)
    assert not folder.exists()  # published or removed, then the folder went
    assert len(manifest_of(ctx)["images"]) == 1


def test_spooled_files_are_private_and_never_replace_a_planted_file(
    emulator: XaiEmulator, output_uri: str, spool_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int]] = []
    real_publish = ImageStore._publish

    def observe(store: ImageStore, name: str, **kwargs: Any) -> str:
        if kwargs.get("local_file"):
            seen.append((name, os.lstat(kwargs["local_file"]).st_mode & 0o777))
        return real_publish(store, name, **kwargs)

    monkeypatch.setattr(ImageStore, "_publish", observe)
    generate(output_uri, n=2).execute(context())

    assert [mode for _, mode in seen] == [0o600, 0o600, 0o600]  # two images and the manifest
    assert os.listdir(spool_root) == []


# --------------------------------------------------------------------------- nothing left behind


def test_a_deferrable_run_leaves_no_spool_folder_on_the_triggerer(
    emulator: XaiEmulator, output_uri: str, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context()
    op = operator(output_uri)
    trigger = deferred_trigger(op, ctx)  # on the worker
    triggerer_spool = tmp_path / "triggerer-spool"
    monkeypatch.setenv("AIRFLOW__XAI_IMAGE__SPOOL_DIR", str(triggerer_spool))  # on the triggerer's machine

    event = asyncio.run(first_event(trigger))

    assert event["status"] == "success"
    assert len(images_in(out)) == 4
    assert triggerer_spool.is_dir()  # it was used...
    assert os.listdir(triggerer_spool) == []  # ...and its task folder is gone
    monkeypatch.delenv("AIRFLOW__XAI_IMAGE__SPOOL_DIR")
    assert len(op.execute_complete(ctx, event)) == 4


def test_a_failed_trigger_keeps_only_an_unstored_image_in_its_spool(
    emulator: XaiEmulator, output_uri: str, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context()
    trigger = deferred_trigger(operator(output_uri, prompt=["a red kite", "a blue kite"], n=1), ctx)
    _, kwargs = trigger.serialize()
    triggerer_spool = tmp_path / "triggerer-spool"
    monkeypatch.setenv("AIRFLOW__XAI_IMAGE__SPOOL_DIR", str(triggerer_spool))

    emulator.configure(generation_status_script=[400])  # one prompt refused, one stored
    refused = asyncio.run(first_event(type(trigger)(**kwargs)))
    assert refused["status"] == "error"
    assert len(images_in(out)) == 1
    assert os.listdir(triggerer_spool) == []

    real_publish = image_store.publish
    monkeypatch.setattr(image_store, "publish", Mock(side_effect=PermissionError("storage refuses writes")))
    down = asyncio.run(first_event(type(trigger)(**kwargs)))
    assert down["status"] == "error"
    [folder] = os.listdir(triggerer_spool)
    [stored] = [path.name[:11] for path in images_in(out)]
    [missing] = {"p00000-i00-", "p00001-i00-"} - {stored}
    assert [name[:11] for name in os.listdir(triggerer_spool / folder)] == [missing]  # billed: kept

    monkeypatch.setattr(image_store, "publish", real_publish)
    again = asyncio.run(first_event(type(trigger)(**kwargs)))
    assert again == {**again, "status": "success", "requests": 0}  # published from the spool, not paid again
    assert len(images_in(out)) == 2
    assert os.listdir(triggerer_spool) == []


def test_staging_files_a_killed_upload_left_in_the_output_are_removed(
    emulator: XaiEmulator, output_uri: str, out: Path
) -> None:
    folder = out / "manual__faults" / "generate"
    (folder / "_records").mkdir(parents=True)
    dead = [
        folder / f".p00000-i00-0123456789ab.jpg.partial-{'a' * 32}",
        folder / "_records" / f".p00000-0123456789ab.json.partial-{'b' * 32}",
    ]
    live = folder / f".p00001-i00-0123456789ab.jpg.partial-{'c' * 32}"  # another run's upload, in progress
    for path in [*dead, live]:
        path.write_bytes(VICTIM_BYTES[:100])
    for path in dead:
        os.utime(path, (1_000_000_000, 1_000_000_000))

    generate(output_uri).execute(context())

    assert [path.exists() for path in [*dead, live]] == [False, False, True]


def test_a_spool_file_is_new_private_and_never_opened_through_a_link(spool_root: Path, victim: Path) -> None:
    spool = Spool("file:///out/run/task")
    folder = Path(spool.make())
    (folder / "planted.part").symlink_to(victim)

    with pytest.raises(FileExistsError):
        spool.create("planted.part")
    with spool.create("new.part") as sink:
        sink.write(b"bytes")

    assert victim.read_bytes() == VICTIM_BYTES
    assert (folder / "new.part").stat().st_mode & 0o777 == 0o600


def test_a_spool_file_is_created_when_an_ending_run_removed_the_empty_folder_meanwhile(
    spool_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool("file:///out/run/task")
    real_make = Spool.make
    makes: list[str] = []

    def make_then_lose_it_once(self: Spool) -> str:
        path = real_make(self)
        makes.append(path)
        if len(makes) == 1:
            self.remove_if_empty()  # another thread's run ended right after the folder was made
        return path

    monkeypatch.setattr(Spool, "make", make_then_lose_it_once)
    with spool.create("p00000-i00-0123456789ab.1234abcd.part") as sink:
        sink.write(b"bytes")

    assert len(makes) == 2
    assert os.listdir(spool.path) == ["p00000-i00-0123456789ab.1234abcd.part"]
