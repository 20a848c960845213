"""What resuming needs of a task's records, a few bytes per prompt: progress, what is left, moderation."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.exceptions import XaiContentFilteredError
from airflow_provider_xai_image.ledger.records import RequestRecord


class Progress:
    """What resuming and the checks need of each prompt's current records, a few bytes per prompt index:
    images done (stored or filtered), the next free image index, whether it has a record, an error or a
    filtered image; and what was spent. 100,000 prompts take 400 kB.
    """

    _RECORDED, _ERROR, _FILTERED = 1, 2, 4

    def __init__(self) -> None:
        self._done = bytearray()
        self._flags = bytearray()
        self._next_image = array("H")
        #: Billed or possibly billed by the current records: what a budget counts as spent.
        self.spent_usd_ticks = 0

    def update(self, merged: RequestRecord) -> None:
        """Take in the merged current record of a prompt (replacing what was known of that prompt).

        :param merged: Every current record of the prompt, merged.
        """
        index = merged.prompt_index
        if index >= len(self._flags):
            more = index + 1 - len(self._flags)
            self._done.extend(bytes(more))
            self._flags.extend(bytes(more))
            self._next_image.frombytes(bytes(more * self._next_image.itemsize))
        self._done[index] = len(merged.done_images)
        self._next_image[index] = max((image.image_index for image in merged.images), default=-1) + 1
        self._flags[index] = (
            self._RECORDED | (self._ERROR if merged.error else 0) | (self._FILTERED if merged.filtered else 0)
        )

    def _flag(self, index: int, flag: int) -> bool:
        return index < len(self._flags) and bool(self._flags[index] & flag)

    def recorded(self, index: int) -> bool:
        """The prompt has a current record."""
        return self._flag(index, self._RECORDED)

    def failed(self, index: int) -> bool:
        """The prompt's merged current record has an error."""
        return self._flag(index, self._ERROR)

    def done_images(self, index: int) -> int:
        """Images of the prompt stored or filtered: nothing more to pay for."""
        return self._done[index] if index < len(self._done) else 0

    def next_image_index(self, index: int) -> int:
        """The first image index no record of the prompt uses (failed slots included)."""
        return self._next_image[index] if index < len(self._next_image) else 0

    def filtered_prompts(self) -> list[int]:
        """The prompt indices with an image xAI's moderation filtered."""
        return [index for index, flags in enumerate(self._flags) if flags & self._FILTERED]


class Remaining(Mapping[int, tuple[ImageRequest, int]]):
    """What is left to pay for when a run starts, by prompt index: the request for the missing images only,
    and the index of its first new image.

    A prompt is done when it has ``n`` images stored or filtered; the missing ones are numbered after
    every image index already used (failed slots included). Kept as one bit per prompt (which were left
    when the run started); each item is made from the progress when it is drawn, before its prompt runs.

    :param requests: Every prompt's full request, by prompt index.
    :param progress: What earlier runs recorded.
    """

    def __init__(self, requests: Mapping[int, ImageRequest], progress: Progress) -> None:
        self._requests = requests
        self._progress = progress
        self._left = bytearray((max(requests, default=-1) + 8) // 8)
        self._count = 0
        for index in requests:
            if requests[index].n > progress.done_images(index):
                self._left[index >> 3] |= 1 << (index & 7)
                self._count += 1

    def _is_left(self, index: int) -> bool:
        return 0 <= index < 8 * len(self._left) and bool(self._left[index >> 3] >> (index & 7) & 1)

    def __getitem__(self, index: int) -> tuple[ImageRequest, int]:
        if not self._is_left(index):
            raise KeyError(index)
        request = self._requests[index]
        missing = request.n - self._progress.done_images(index)
        if missing < request.n:
            request = request.model_copy(update={"n": missing})
        return request, self._progress.next_image_index(index)

    def __iter__(self) -> Iterator[int]:
        return (index for index in range(8 * len(self._left)) if self._is_left(index))

    def __len__(self) -> int:
        return self._count


def check_moderation(filtered_prompts: Iterable[int], on_moderation: str) -> None:
    """With ``on_moderation="fail"``, raise naming every prompt index that had an image filtered.

    :param filtered_prompts: The prompt indices with a filtered image.
    :param on_moderation: ``fail`` or ``skip``.
    """
    if on_moderation != "fail":
        return
    filtered = sorted(filtered_prompts)
    if filtered:
        raise XaiContentFilteredError(
            f"xAI's moderation filtered images of prompt index(es) {filtered}; "
            'set on_moderation="skip" to record them in the manifest and go on.'
        )


#: The ledger's page cache, in KiB (SQLite's ``cache_size`` takes it negative); beyond it pages go to a
