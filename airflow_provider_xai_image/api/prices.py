"""What xAI charges: the unit of its prices and the price list of ``GET /image-generation-models``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: 1 tick = 1e-10 USD (``usage.cost_in_usd_ticks``, ``image_price``, ``price_per_image``).
USD_TICKS_PER_USD = 10_000_000_000
#: The highest price per image xAI lists ($0.08, ``grok-imagine-image-2.0`` at medium/2k): what a budget
#: estimate assumes when the price of a model cannot be read (estimate high, never low).
HIGHEST_KNOWN_PRICE_USD_TICKS = 800_000_000


class PriceTier(BaseModel):
    """One entry of a model's ``pricing`` matrix."""

    quality: str | None = None
    resolution: str | None = None
    price_per_image: int


class ImageModel(BaseModel):
    """An entry of ``GET /image-generation-models``."""

    model_config = ConfigDict(extra="allow")

    id: str
    aliases: list[str] = Field(default_factory=list)
    image_price: int | None = None
    pricing: list[PriceTier] = Field(default_factory=list)

    def price_usd_ticks(self, quality: str | None, resolution: str | None) -> int | None:
        """The price of one image: the highest tier matching what is set (``pricing``), else ``image_price``."""
        prices = [
            tier.price_per_image
            for tier in self.pricing
            if (quality is None or tier.quality in (None, quality))
            and (resolution is None or tier.resolution in (None, resolution))
        ]
        return max(prices) if prices else self.image_price
