"""The models half of :class:`~airflow_provider_xai_image.hooks.xai.XaiHook`: the image models and their prices."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from airflow_provider_xai_image.api.images import MODELS_PATH, ImageRequest
from airflow_provider_xai_image.api.prices import HIGHEST_KNOWN_PRICE_USD_TICKS, ImageModel
from airflow_provider_xai_image.exceptions import XaiApiError


class XaiModelsApi:
    """xAI's model list, sent through the hook's :meth:`call` (mixed into ``XaiHook``)."""

    call: Callable[..., dict[str, Any]]
    log: Any

    def list_image_models(self) -> list[ImageModel]:
        """The image models this key can use, with their prices (1e-10 USD per image)."""
        payload = self.call("GET", MODELS_PATH)
        return [ImageModel.model_validate(item) for item in payload.get("models", [])]

    @cached_property
    def _models_or_none(self) -> list[ImageModel] | None:
        try:
            return self.list_image_models()
        except XaiApiError as error:
            self.log.warning("Could not read image prices (%s); estimating with the highest known price.", error)
            return None

    def price_per_image_usd_ticks(self, request: ImageRequest) -> int:
        """
        The price of one image of ``request``: the model's price for its quality and resolution (the
        highest matching tier of ``pricing``, else ``image_price``). When prices cannot be read or the
        model is not listed, the highest known price: an estimate is never low. Edits bill each source
        image too, without a published price: estimate them at the same price.
        """
        for entry in self._models_or_none or ():
            if request.model == entry.id or request.model in entry.aliases:
                return entry.price_usd_ticks(request.quality, request.resolution) or HIGHEST_KNOWN_PRICE_USD_TICKS
        return HIGHEST_KNOWN_PRICE_USD_TICKS
