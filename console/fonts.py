"""The CJK font pages fall back on: WenQuanYi Micro Hei, the font the PDF record embeds
(package ``mpl-font``), taken out of its TrueType collection once, as a browser can't read a
collection."""

from __future__ import annotations

import io
from functools import cache

from fontTools.ttLib import TTCollection  # type: ignore[import-untyped]

from coldtrail.api.record.pdf import font_file


@cache
def cjk_ttf() -> bytes:
    collection = TTCollection(str(font_file()))
    out = io.BytesIO()
    collection.fonts[0].save(out)
    return out.getvalue()
