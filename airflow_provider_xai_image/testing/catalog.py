"""The image models the emulator serves, their aliases and prices (1 tick = 1e-10 USD)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_xai_image.models import FALLBACK_PRICE_USD_TICKS_PER_IMAGE

#: Emulator price of each source image of an edit ($0.002); the contract says inputs are billed, not how much.
INPUT_IMAGE_PRICE_USD_TICKS = 20_000_000
#: Batch requests cost this fraction of the list price ("reduced price" in the contract).
BATCH_PRICE_FACTOR = 0.5
#: ``created`` timestamp reported for every model (2025-01-01T00:00:00Z).
_CREATED = 1_735_689_600


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``GET /v1/image-generation-models``."""

    id: str
    image_price: int
    aliases: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": f"fp_emu_{self.id.replace('-', '_')}",
            "created": _CREATED,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0.0",
            "input_modalities": ["text", "image"],
            "output_modalities": ["image"],
            "image_price": self.image_price,
            "aliases": list(self.aliases),
        }


MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("grok-imagine-image-quality", FALLBACK_PRICE_USD_TICKS_PER_IMAGE),
    ModelInfo("grok-imagine-image", FALLBACK_PRICE_USD_TICKS_PER_IMAGE),
    ModelInfo("grok-imagine-image-pro", FALLBACK_PRICE_USD_TICKS_PER_IMAGE),
    ModelInfo("grok-2-image", 700_000_000, aliases=("grok-2-image-1212",)),
)

_BY_NAME: dict[str, ModelInfo] = {name: model for model in MODELS for name in (model.id, *model.aliases)}


def resolve_model(name: str) -> ModelInfo | None:
    """The model called ``name`` (its id or an alias), or None when there is none."""
    return _BY_NAME.get(name)
