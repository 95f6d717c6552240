"""The app's text needs no emoji font: symbols come from Streamlit's Material icons (`:material/...:`)."""

from __future__ import annotations

import re
from pathlib import Path
from tests.support.paths import ROOT

#: Emoji and dingbat blocks that render as empty boxes where no emoji font is installed; the plain check
#: and ballot marks (U+2713, U+2717) are in the common text fonts (DejaVu) and are allowed.
EMOJI = re.compile("[\u2600-\u2712\u2714-\u2716\u2718-\u27bf\U0001f000-\U0001faff\ufe0f]")


def test_no_emoji_in_the_app_or_its_figures():
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:60]}"
             for folder in ("app", "analysis") for p in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if EMOJI.search(line)]
    assert not found, "emoji need a font the machine may lack:\n" + "\n".join(found)
