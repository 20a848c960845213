"""Keeping the API key out of text that came from a remote server, and bounding stored error texts.

A server may quote the request back (a proxy's error page, an echoed ``Authorization`` header), so
every answer's text is scrubbed before anything is derived from it: the key goes in each form it can
take in a body, raw (also inside ``Bearer <key>``), URL-encoded and JSON-escaped (also JSON quoted in JSON).
"""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

#: What a removed key is replaced with.
REDACTED = "***"
#: JSON strings nested in JSON strings: an error message quoting a JSON body (each level escapes again).
JSON_ESCAPE_LEVELS = 3
#: Shorter secrets are left alone, as Airflow's log masking does (``[logging] min_length_masked_secret``):
#: removing them would garble any text, image data included.
MIN_SCRUBBED_CHARS = 5
#: Longest error text kept in records and the manifest.
MAX_STORED_ERROR_CHARS = 2000


class KeyScrubber:
    """Removes one secret, in every form a server could echo it, from texts.

    :param secret: The API key.
    """

    def __init__(self, secret: str) -> None:
        forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}
        escaped = secret
        for _ in range(JSON_ESCAPE_LEVELS):
            escaped = json.dumps(escaped)[1:-1]
            forms |= {escaped, escaped.replace("/", "\\/")}
        # Longest first: a form that contains another goes whole.
        self._forms = sorted(forms, key=len, reverse=True) if len(secret) >= MIN_SCRUBBED_CHARS else []

    def __call__(self, text: str) -> str:
        """``text`` without the secret."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text


def cap_error_text(text: str | None, limit: int = MAX_STORED_ERROR_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters (saying how much was cut), or None.

    :param text: An error text, or None.
    :param limit: The most characters kept.
    """
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters cut)"
