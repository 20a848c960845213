"""The wire facts of ``docs/xai-api.md``, transcribed by hand for the emulator alone.

Nothing here comes from the provider: a client that gets a path, a field name or a value wrong must
fail against the emulator, not agree with it because both read the same constant. Prices are in
ticks (1 tick = 1e-10 USD, so 200_000_000 ticks = $0.02).
"""

from __future__ import annotations

from typing import Literal, get_args
from urllib.parse import urlsplit

# Paths ------------------------------------------------------------------------------------------

BASE_URL = "https://api.x.ai/v1"
#: The path of :data:`BASE_URL` (``/v1``): every API route lives under it.
API_ROOT = urlsplit(BASE_URL).path
GENERATIONS_PATH = "images/generations"
EDITS_PATH = "images/edits"
MODELS_PATH = "image-generation-models"
API_KEY_PATH = "api-key"
FILES_PATH = "files"
BATCHES_PATH = "batches"

# Request fields ---------------------------------------------------------------------------------

AspectRatio = Literal[
    "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2", "19.5:9", "9:19.5", "20:9", "9:20", "auto"
]
Resolution = Literal["1k", "2k"]
#: ``high`` is refused (400) since revision 2.
Quality = Literal["low", "medium"]
ResponseFormat = Literal["url", "b64_json"]

QUALITIES: tuple[str, ...] = get_args(Quality)
DEFAULT_QUALITY: Quality = "medium"
DEFAULT_RESOLUTION: Resolution = "1k"
DEFAULT_RESPONSE_FORMAT: ResponseFormat = "url"

#: ``n``: images from one prompt in one request.
MIN_IMAGES_PER_REQUEST = 1
MAX_IMAGES_PER_REQUEST = 10
#: Source images of one (multi-image) edit.
MAX_SOURCE_IMAGES = 3
#: The largest source image xAI takes, decoded (10 MiB).
SOURCE_MAX_BYTES = 10 * 1024 * 1024
#: Source image formats xAI takes, as Pillow names them.
SOURCE_IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
#: The ``type`` a source object may carry (it is optional).
SourceType = Literal["image_url"]

# Models and prices ------------------------------------------------------------------------------

#: The model used when a request names none.
DEFAULT_MODEL = "grok-imagine-image-quality"
#: ``image_price`` of each model id.
MODEL_PRICES: dict[str, int] = {
    "grok-imagine-image-quality": 500_000_000,
    "grok-imagine-image": 200_000_000,
    "grok-imagine-image-2.0": 500_000_000,
}
#: The ``pricing`` matrix of the models that have one, by (quality, resolution); it beats ``image_price``.
MODEL_TIER_PRICES: dict[str, dict[tuple[Quality, Resolution], int]] = {
    "grok-imagine-image-2.0": {
        ("low", "1k"): 200_000_000,
        ("low", "2k"): 400_000_000,
        ("medium", "1k"): 500_000_000,
        ("medium", "2k"): 800_000_000,
    },
}
#: Other names a model answers to; a response reports the model's own id.
MODEL_ALIASES: dict[str, tuple[str, ...]] = {"grok-imagine-image-quality": ("grok-imagine-image-pro",)}

# Files API --------------------------------------------------------------------------------------

#: The multipart part holding the file; every other field must come before it.
FILE_PART = "file"
#: The optional form fields of ``POST /v1/files``.
FILE_FIELDS: tuple[str, ...] = ("purpose", "expires_after")
FILE_EXPIRES_AFTER_MIN_SECONDS = 3600
FILE_EXPIRES_AFTER_MAX_SECONDS = 2_592_000
FILE_ID_PREFIX = "file_"

# Batch API --------------------------------------------------------------------------------------

#: Batch requests cost this fraction of the list price.
BATCH_PRICE_FACTOR = 0.5
#: The ``method`` and the ``url`` values of a line of a batch input file.
BATCH_LINE_METHOD = "POST"
BATCH_LINE_URLS: tuple[str, ...] = (f"{API_ROOT}/{GENERATIONS_PATH}", f"{API_ROOT}/{EDITS_PATH}")
#: The one key of ``batch_request`` on the inline route (no public source names it for images).
INLINE_BATCH_REQUEST_KIND = "image_generation"
#: The one key of a successful result's ``response``.
BATCH_RESPONSE_KIND = "image_generation"
#: Image URLs in batch results live this long (seconds).
BATCH_IMAGE_URL_TTL_SECONDS = 3600.0
#: Batch creations per second per team.
BATCH_CREATE_PER_SECOND = 1
#: Largest body of one "add requests" call: 25 MB, decimal.
BATCH_ADD_MAX_BYTES = 25_000_000
#: "Add requests" calls allowed per window of seconds.
BATCH_ADD_MAX_CALLS = 100
BATCH_ADD_WINDOW_SECONDS = 30.0
#: The paging parameters of results and batch lists (``page_size`` was revision 1's mistake).
PAGE_LIMIT_PARAM = "limit"
PAGE_TOKEN_PARAM = "pagination_token"
MAX_PAGE_LIMIT = 1000
#: The page size when ``limit`` is absent (not published: the emulator's choice).
DEFAULT_PAGE_LIMIT = 100
