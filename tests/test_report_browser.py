"""A tiny run's report.html rendered by a real browser: headless Chromium (Debian's package).

Skipped only where chromium is not installed and CI is not set; under ``CI=true`` a missing
chromium fails the test (``.ci/run`` installs it with apt).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ftp.testing import require_tool
from tests.test_report import run, tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

WIDTH, HEIGHT = 1280, 2400


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require_tool(found is not None, "chromium (apt-get install -y chromium)")
    assert found is not None
    return found


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium headless on ``page``, kept off the network and any user profile."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_headless_chromium_renders_the_report(tiny_model, tmp_path):
    report = run(tiny_pipeline(tmp_path, tiny_model), tmp_path / "run") / "report.html"

    dom = browse(report, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    # The browser parsed the inline SVG charts and the tables as elements.
    assert dom.stdout.count("<polyline") >= 4
    assert dom.stdout.count("<svg") >= 4
    for heading in ("<h2>Training</h2>", "<h2>Evaluations</h2>", "<h2>Answers</h2>"):
        assert heading in dom.stdout
    assert "before training" in dom.stdout and "<script" not in dom.stdout

    shot = tmp_path / "report.png"
    taken = browse(report, tmp_path / "profile-shot", f"--screenshot={shot}",
                   f"--window-size={WIDTH},{HEIGHT}")
    assert taken.returncode == 0 and shot.is_file(), taken.stderr
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colours = image.getcolors(maxcolors=1 << 20) or []
    # A blank page is one colour; text, tables and coloured curves make many.
    assert len(colours) > 50
    # The curves' own colour (the first series' blue) is on screen.
    blue = sum(n for n, (r, g, b) in colours if b > 150 and r < 80 and 90 < g < 150)
    assert blue > 100
    keep = os.environ.get("FTP_KEEP_SCREENSHOT")
    if keep:  # to look at it yourself: FTP_KEEP_SCREENSHOT=/tmp/report.png pytest THIS_FILE
        shutil.copy(shot, keep)
