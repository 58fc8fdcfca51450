"""A report page opened in a real browser (headless Chromium, where installed): it renders and every image loads.

The page is copied beside itself with a script appended that records, after load, how many images
the browser decoded; Chromium's --dump-dom prints the resulting document. Skipped with a notice
where no Chromium is installed (`apt-get install chromium` on Debian).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import harken.report as rp

from test_report import grpo_rows, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = `images ${ok.length}/${imgs.length} wide ${document.documentElement.scrollWidth > window.innerWidth}`;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed: the browser check of the report page is skipped")
def test_report_page_renders_in_chromium(tmp_path):
    page = rp.run_report(write_run(tmp_path / "run", "grpo", grpo_rows()))
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "\n</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">images (\d+)/(\d+) wide (\w+)</pre>', dom)
    assert found, f"the page did not finish loading in Chromium:\n{dom[:2000]}"
    ok, total = int(found[1]), int(found[2])
    assert total == 8 and ok == total  # 7 panels and the grid of the remaining metrics
    assert found[3] == "false"  # no sideways scrolling
    assert "This run learned nothing" not in dom
