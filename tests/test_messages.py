"""Engine messages (engine.messages.Msg) read as English and show translated on pages."""

from __future__ import annotations

import re
from pathlib import Path

from apps.web.i18n import catalog, translator
from engine.messages import Msg

ROOT = Path(__file__).resolve().parent.parent


def test_a_message_is_its_english_text_and_translates_with_its_parameters():
    message = Msg("at most %(n)s characters", n=20)
    assert message == "at most 20 characters"
    assert translator("zh")(message) == "最多 20 个字符"
    assert translator("en")(message) == "at most 20 characters"


def test_every_engine_message_is_in_both_catalogs():
    msgids = {
        m.group(1)
        for path in (ROOT / "engine").rglob("*.py")
        for m in re.finditer(r'Msg\(\s*"((?:[^"\\]|\\.)*)"', path.read_text(encoding="utf-8"))
    }
    assert len(msgids) > 30
    for locale in ("zh", "en"):
        missing = sorted(msgids - set(catalog(locale)))
        assert not missing, f"{locale}: {missing}"
