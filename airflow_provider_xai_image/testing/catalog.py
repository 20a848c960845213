"""The image models the emulator serves, their aliases and prices (1 tick = 1e-10 USD).

Ids, aliases and prices come from :mod:`~airflow_provider_xai_image.testing.contract`; a model with
a ``pricing`` matrix bills by the request's quality and resolution, the others by ``image_price``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_provider_xai_image.testing.contract import (
    DEFAULT_QUALITY,
    DEFAULT_RESOLUTION,
    MODEL_ALIASES,
    MODEL_PRICES,
    MODEL_TIER_PRICES,
    Quality,
    Resolution,
)

#: Emulator price of each source image of an edit ($0.002); the contract says inputs are billed, not how much.
INPUT_IMAGE_PRICE_USD_TICKS = 20_000_000
#: ``created`` timestamp reported for every model (2025-01-01T00:00:00Z).
_CREATED = 1_735_689_600


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``GET /v1/image-generation-models``."""

    id: str
    image_price: int
    aliases: tuple[str, ...] = ()
    #: Price per image by (quality, resolution); empty when the model has one price.
    tier_prices: dict[tuple[Quality, Resolution], int] = field(default_factory=dict)

    def price_per_image(self, quality: Quality | None, resolution: Resolution | None) -> int:
        """The price of one output image at ``quality`` and ``resolution`` (absent: the defaults)."""
        if not self.tier_prices:
            return self.image_price
        return self.tier_prices[(quality or DEFAULT_QUALITY, resolution or DEFAULT_RESOLUTION)]

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id,
            "fingerprint": f"fp_emu_{self.id.replace('-', '_').replace('.', '_')}",
            "created": _CREATED,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0.0",
            "input_modalities": ["text", "image"],
            "output_modalities": ["image"],
            "image_price": self.image_price,
            "aliases": list(self.aliases),
        }
        if self.tier_prices:
            entry["pricing"] = [
                {"quality": quality, "resolution": resolution, "price_per_image": price}
                for (quality, resolution), price in self.tier_prices.items()
            ]
        return entry


MODELS: tuple[ModelInfo, ...] = tuple(
    ModelInfo(model_id, price, MODEL_ALIASES.get(model_id, ()), MODEL_TIER_PRICES.get(model_id, {}))
    for model_id, price in MODEL_PRICES.items()
)

_BY_NAME: dict[str, ModelInfo] = {name: model for model in MODELS for name in (model.id, *model.aliases)}


def resolve_model(name: str) -> ModelInfo | None:
    """The model called ``name`` (its id or an alias), or None when there is none."""
    return _BY_NAME.get(name)
