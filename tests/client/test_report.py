"""The report: readable summary, self-contained HTML, PNG files, and a page that a real browser renders."""
from __future__ import annotations

import base64
import io
import re
import subprocess

import numpy as np
from PIL import Image

from galore_cli.report import ReportEntry, html_report, summary_dict, summary_text, write_report
from galore_client.results import Explanation, ImageFailure
from tests.tools import require_tool


def test_summary_lists_classes_score_insecurities_by_strength_and_counterfactual(explanation):
    text = summary_text("cat.jpg", explanation)
    lines = text.splitlines()
    assert lines[0] == "cat.jpg (120x80)"
    assert "0.610  tabby [281]" in lines[1] and "predicted" in lines[1]
    assert "s(x) softmax: 0.610" in text
    ranked = [line for line in lines if re.match(r"\s+\d\. ", line)]
    assert [line.split("  strength")[0].strip() for line in ranked] == [
        "1. tabby / tiger cat", "2. tabby / tiger cat / Egyptian cat", "3. tiger cat / Egyptian cat"]
    assert "counterfactual: why tabby and not lynx? strength 0.5" in text


def test_summary_of_a_failed_image_names_the_error():
    failed = failed_result(ImageFailure("INVALID_ARGUMENT", "cannot decode image", "images[0].data"))
    assert summary_text("x.png", failed) == "x.png: FAILED INVALID_ARGUMENT: images[0].data: cannot decode image"
    assert summary_dict("x.png", failed)["error"] == {"code": "INVALID_ARGUMENT", "field": "images[0].data",
                                                      "message": "cannot decode image"}


def failed_result(error: ImageFailure) -> Explanation:
    return Explanation(error=error)


def test_summary_dict_is_json_ready(explanation):
    import json
    data = json.loads(json.dumps(summary_dict("cat.jpg", explanation)))
    assert [i["labels"] for i in data["insecurities"]][0] == ["tabby", "tiger cat"]
    assert data["insecurities"][0]["bbox"] == [10, 10, 50, 50] and data["insecurities"][0]["pixel_count"] == 1600
    assert data["counterfactual"]["counter"] == [{"class_id": 287, "label": "lynx"}]


def test_html_report_is_self_contained_and_escapes_names(gray_image, exemplar_image, explanation):
    entries = [ReportEntry("<b>cat</b>.jpg", gray_image, explanation, {287: exemplar_image}),
               ReportEntry("broken.jpg", gray_image, failed_result(ImageFailure("INTERNAL", "boom")))]
    page = html_report(entries)
    assert "<b>cat</b>" not in page and "&lt;b&gt;cat&lt;/b&gt;.jpg" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(https?:|//|file:)', page)
    first = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1])))
    assert first.format == "PNG" and first.size[1] > 80
    assert "broken.jpg: FAILED INTERNAL: boom" in page


def test_write_report_writes_one_png_per_figure(tmp_path, gray_image, explanation):
    files = write_report(tmp_path / "out", [ReportEntry("a/cat.jpg", gray_image, explanation),
                                             ReportEntry("b/cat.jpg", gray_image, explanation)])
    assert files.html.name == "report.html" and files.html.exists()
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "cat_2_attributive.png", "cat_2_counterfactual.png", "cat_2_deliberative.png",
        "cat_attributive.png", "cat_counterfactual.png", "cat_deliberative.png"]
    assert Image.open(files.figures["a/cat.jpg"]["deliberative"]).size[0] == 3 * 120 + 40


def chromium() -> str:
    return require_tool("chromium", "chromium-browser", purpose="render the HTML report headless")


def test_html_report_renders_in_headless_chromium(tmp_path, explanation):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    files = write_report(tmp_path / "out", [ReportEntry("cat.jpg", photo, explanation)])
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,1400", f"--screenshot={shot}",
         files.html.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot; chromium said: {result.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1400, 900)
    # non-blank: many colours, and the random photo's pixels show up (no flat white page)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000
    assert (pixels.std(axis=(0, 1)) > 20).all()
