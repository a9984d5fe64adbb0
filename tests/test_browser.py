"""Real-browser checks: the app in headless Chromium (Debian's, driven by Playwright).

Each test drives one tab as a user would and saves a screenshot to docs/screenshots/ (the README
shows them). Skipped when Chromium or Playwright is missing; `.ci/run` installs both.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import close, free_port, stroke

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

if CHROMIUM is None:
    pytest.skip("chromium is not installed (bash .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def app_url():
    from demos import build_app
    from demos.settings import QUEUE, launch_options
    demo = build_app()
    demo.queue(**QUEUE)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, **launch_options())
    yield url
    close(demo)


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1100})
        pg.set_default_timeout(90_000)
        pg.goto(app_url, wait_until="load")
        yield pg
        browser.close()


def _shot(page, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _tab(page, name: str):
    page.get_by_role("tab", name=name).click()


def test_explore_grid_and_click(page):
    _tab(page, "Explore")
    page.wait_for_selector("#explore_gallery img")
    page.locator("#explore_gallery img").nth(2).click()
    page.wait_for_selector("#explore_image img")
    _shot(page, "explore")


def test_dissect_click_unit_shows_top_images(page):
    _tab(page, "Dissect")
    page.wait_for_selector("#dissect_gallery img")
    page.locator("#dissect_gallery img").first.click()
    page.wait_for_selector("#dissect_top img")
    assert page.locator("#dissect_top img").count() >= 1
    _shot(page, "dissect")




def _no_error_badge(page, component: str):
    """Gradio covers an output whose handler raised with an "Error" badge; ours show notices."""
    assert page.locator(f"{component} .error").count() == 0


def test_errors_are_notices_that_keep_the_last_good_output(page):
    """A bad input in each tab gives a message in plain words and the outputs stay usable."""
    _tab(page, "Explore")
    page.wait_for_selector("#explore_gallery img")
    first = page.locator("#explore_gallery img").first.get_attribute("src")
    page.locator("#explore_numbers textarea, #explore_numbers input").first.fill("abc")
    page.locator("#explore_show").click()
    sync_api.expect(page.locator("#explore_status")).to_contain_text("⚠️", timeout=60_000)
    _no_error_badge(page, "#explore_gallery")
    assert page.locator("#explore_gallery img").first.get_attribute("src") == first

    _tab(page, "Dissect")
    page.wait_for_selector("#dissect_gallery img")
    page.locator("#dissect_unit input").fill("5000")
    page.get_by_role("button", name="Show unit").click()
    sync_api.expect(page.locator("#dissect_note")).to_contain_text("5000", timeout=60_000)
    _no_error_badge(page, "#dissect_gallery")
    page.locator("#dissect_gallery img").first.click()          # still usable
    page.wait_for_selector("#dissect_top img")


def _canvas_image(page, elem: str) -> str:
    return page.locator(f"{elem} img.sc-bg").get_attribute("src") or ""


def test_paint_stroke_changes_the_image(page):
    _tab(page, "Paint")
    info = page.locator("#paint_info")
    sync_api.expect(info).to_contain_text("Image #", timeout=60_000)
    before = page.locator("#paint_result img").get_attribute("src")
    page.locator("#paint_canvas canvas").first.wait_for()
    # the concept is a visible control; each choice carries its concept's colour
    grass = page.locator("#paint_concept label", has_text="grass")
    assert "solid" in grass.evaluate("e => getComputedStyle(e).borderLeft")
    grass.click()
    page.wait_for_timeout(1000)
    shown = _canvas_image(page, "#paint_canvas")
    stroke(page, "#paint_canvas")                 # live mode applies it on release
    sync_api.expect(info).to_contain_text("1 edit(s)", timeout=60_000)
    sync_api.expect(info).to_contain_text("draw grass")
    sync_api.expect(page.locator("#paint_result img")).not_to_have_attribute("src", before or "")
    assert _canvas_image(page, "#paint_canvas") != shown      # the stroke lands on the canvas
    # with live mode off, a stroke waits; switching concept applies it with its own concept
    page.locator("#paint_live input").uncheck()
    page.wait_for_timeout(500)
    stroke(page, "#paint_canvas", 0.5)
    page.wait_for_timeout(500)
    sync_api.expect(info).to_contain_text("1 edit(s)")
    page.locator("#paint_concept label", has_text="tree").click()
    sync_api.expect(info).to_contain_text("2 edit(s)", timeout=60_000)
    sync_api.expect(info).to_contain_text("draw grass")
    page.locator("#paint_live input").check()
    page.wait_for_timeout(1000)
    _shot(page, "paint")


def test_fast_strokes_are_never_lost(page):
    """Strokes drawn while an earlier one is still on its way are all applied: three strokes
    drawn back to back give the same image as the same strokes drawn one at a time."""
    _tab(page, "Paint")
    info = page.locator("#paint_info")
    rows = (0.1, 0.4, 0.7)
    page.locator("#paint_reset").click()
    sync_api.expect(info).to_contain_text("0 edit(s)", timeout=60_000)
    for y in rows:
        stroke(page, "#paint_canvas", y)
        sync_api.expect(info).to_contain_text(f"{rows.index(y) + 1} edit(s)", timeout=60_000)
    slow = _canvas_image(page, "#paint_canvas")
    page.locator("#paint_reset").click()
    sync_api.expect(info).to_contain_text("0 edit(s)", timeout=60_000)
    page.wait_for_timeout(500)
    for y in rows:
        stroke(page, "#paint_canvas", y)
    page.wait_for_function("s => document.querySelector('#paint_canvas img.sc-bg').getAttribute('src') === s",
                           arg=slow, timeout=30_000)
    page.locator("#paint_reset").click()


def test_watermark_removal_reports_rates(page):
    _tab(page, "Watermarks")
    page.locator("#wm_find").click()
    sync_api.expect(page.locator("#wm_found")).to_contain_text("have a watermark", timeout=120_000)
    first = page.locator("#wm_gallery img").first
    outlined = first.get_attribute("src")
    page.locator("#wm_outline input").uncheck()              # redraws the samples without outlines
    page.wait_for_function("s => document.querySelector('#wm_gallery img').src !== s", arg=outlined)
    page.locator("#wm_outline input").check()
    page.wait_for_function("s => document.querySelector('#wm_gallery img').src === s", arg=outlined)
    page.locator("#wm_remove").click()
    result = page.locator("#wm_result")
    sync_api.expect(result).to_contain_text("Watermark rate", timeout=120_000)
    sync_api.expect(result).to_contain_text("→")
    _shot(page, "watermark")


def test_photo_upload_and_invert(page):
    import demos.photo as photo       # the tab's own step counts (~12 s): the screenshot shows
    _tab(page, "Photo")               # what a user gets
    example = Path(photo.EXAMPLES_DIR) / "hill_trees.jpg"
    page.locator("#photo_upload input[type=file]").set_input_files(str(example))
    page.wait_for_timeout(1000)
    page.locator("#photo_invert").click()
    sync_api.expect(page.locator("#photo_status")).to_contain_text("Done", timeout=180_000)
    sync_api.expect(page.locator("#photo_status")).to_contain_text("PSNR")
    _shot(page, "photo")


def test_rewrite_preset_and_toggle_original(page):
    _tab(page, "Rewrite")
    page.wait_for_selector("#rewrite_gallery img")
    page.get_by_role("button", name="Apply preset").click()
    status = page.locator("#rewrite_status")
    sync_api.expect(status).to_contain_text("Applied preset", timeout=120_000)
    sync_api.expect(status).to_contain_text("Measured on held-out samples")
    page.locator("#rewrite_toggle").click()
    sync_api.expect(status).to_contain_text("Showing the original model", timeout=60_000)
    page.locator("#rewrite_toggle").click()
    sync_api.expect(status).to_contain_text("Showing the edited model", timeout=60_000)
    _shot(page, "rewrite")


def test_rewrite_manual_context_copy_paste_execute(page):
    """The manual rewrite as a user does it, switching samples right after painting (Gradio's
    ImageEditor, used here before the brush canvas, hung blank there and lost the next strokes)."""
    _tab(page, "Rewrite")
    page.wait_for_selector("#rewrite_gallery img")
    status = page.locator("#rewrite_status")
    caption = page.locator("#rewrite_caption")

    def open_sample(k: int):
        page.locator("#rewrite_gallery img").nth(k).click()
        sync_api.expect(caption).to_contain_text(f"#{k}: paint a region", timeout=60_000)
        page.locator("#rewrite_canvas img.sc-bg").wait_for()

    page.locator("#rewrite_clear").click()      # the preset before left its context
    sync_api.expect(status).to_contain_text("Context cleared", timeout=60_000)
    open_sample(0)
    stroke(page, "#rewrite_canvas")
    open_sample(1)                              # straight after a stroke
    stroke(page, "#rewrite_canvas")
    page.locator("#rewrite_add_context").click()
    sync_api.expect(status).to_contain_text("Context: 1 region", timeout=60_000)
    open_sample(2)
    stroke(page, "#rewrite_canvas", 0.2)
    page.locator("#rewrite_copy").click()
    sync_api.expect(status).to_contain_text("Copied a region of image #2", timeout=60_000)
    open_sample(3)
    stroke(page, "#rewrite_canvas")
    page.locator("#rewrite_paste").click()
    sync_api.expect(status).to_contain_text("Pasted into image #3", timeout=60_000)
    page.locator("#rewrite_execute").click()
    sync_api.expect(status).to_contain_text("Rewrote the model", timeout=180_000)
    sync_api.expect(page.locator("#rewrite_history")).to_contain_text("layer")


def test_watermark_marking(page):
    """Mark a watermark by hand: the sample comes with its watermark outlined, a stroke over it
    picks units, and removal can use them."""
    _tab(page, "Watermarks")
    page.get_by_text("Mark a watermark yourself").click()
    number = page.locator("#wm_mark_number input")
    if not number.input_value():                 # the search fills it with a watermarked sample
        number.fill("0")
    page.locator("#wm_mark_load").click()
    page.locator("#wm_mark_canvas img.sc-bg").wait_for()
    stroke(page, "#wm_mark_canvas", 0.45)
    page.locator("#wm_mark_pick").click()
    sync_api.expect(page.locator("#wm_units_note")).to_contain_text("Units most active in the region",
                                                                    timeout=60_000)
    page.locator("#wm_remove").click()
    sync_api.expect(page.locator("#wm_result")).to_contain_text("marked region", timeout=120_000)


def test_photo_stop_keeps_the_result_and_paints(page, app_url):
    """Stop during the inversion keeps the best result so far, ready to paint on (in a page of
    its own: a fresh session)."""
    import demos.photo as photo
    page = page.context.browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(90_000)
    page.goto(app_url, wait_until="load")
    _tab(page, "Photo")
    example = Path(photo.EXAMPLES_DIR) / "hill_trees.jpg"
    page.locator("#photo_upload input[type=file]").set_input_files(str(example))
    page.wait_for_timeout(1000)
    page.locator("#photo_invert").click()
    status = page.locator("#photo_status")
    sync_api.expect(status).to_contain_text("Inverting", timeout=120_000)
    for _ in range(30):                          # until the job reports its end
        page.locator("#photo_stop").click()
        page.wait_for_timeout(2000)
        if "Stopped" in status.inner_text() or "Done" in status.inner_text():
            break
    sync_api.expect(status).to_contain_text("Stopped")
    sync_api.expect(status).to_contain_text("kept the best result so far")
    page.locator("#photo_concept label", has_text="tree").click()
    page.locator("#photo_canvas canvas").first.wait_for()
    page.wait_for_timeout(1000)
    stroke(page, "#photo_canvas")                 # applied on release
    sync_api.expect(page.locator("#photo_info")).to_contain_text("1 paint edit(s)", timeout=60_000)


def test_model_picker_opens_a_known_model_in_every_tab(page, tmp_path, monkeypatch):
    """The picker lists a known StyleGAN2 found in the local HF cache (Hub switched off); Load
    opens it, Explore shows its samples, and a bad Hub id is a notice that keeps the model."""
    from demos import build_app
    from demos.settings import QUEUE
    from tests.test_known import offline_with_a_known_stylegan2
    offline_with_a_known_stylegan2(monkeypatch, tmp_path)
    demo = build_app()
    demo.queue(**QUEUE)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True)
    page = page.context.browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(90_000)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_selector("#explore_gallery img")
        before = page.locator("#explore_gallery img").first.get_attribute("src")
        page.locator("#model_picker input").click()
        page.get_by_role("option", name="tiny — cached").click()
        page.locator("#model_load").click()
        status = page.locator("#model_status")
        sync_api.expect(status).to_contain_text("is open in every tab", timeout=120_000)
        page.wait_for_function(
            "src => { const i = document.querySelector('#explore_gallery img');"
            " return i && i.getAttribute('src') !== src; }", arg=before, timeout=60_000)
        sync_api.expect(page.locator("#explore_status")).to_have_text("", timeout=60_000)
        page.wait_for_timeout(2000)              # every tile of the new model has arrived
        _shot(page, "model_picker")
        _tab(page, "Paint")          # no catalog yet: it says how to get one
        sync_api.expect(page.locator("#paint_problem")).to_contain_text("Nothing to paint with yet",
                                                                       timeout=60_000)
        sync_api.expect(page.locator("#paint_info")).to_contain_text("of tiny-sg2")
        page.locator("#paint_number input").fill("5")
        page.locator("#paint_load").click()          # the tab's own events use the new model too
        sync_api.expect(page.locator("#paint_info")).to_contain_text("Image #5 of tiny-sg2",
                                                                     timeout=60_000)
        _tab(page, "Explore")
        page.locator("#model_picker input").fill("org/not-here")
        page.locator("#model_picker input").press("Enter")
        page.locator("#model_load").click()
        sync_api.expect(status).to_contain_text("Could not open org/not-here", timeout=60_000)
        _tab(page, "Rewrite")
        page.wait_for_selector("#rewrite_gallery img")
    finally:
        page.close()
        close(demo)


def test_a_link_reopens_the_view(page, app_url):
    """A link restores tab, layer and unit (Dissect) or image numbers (Explore); a bad parameter
    is a notice and the rest of the view still opens. Copy link gives the current view back."""
    import time
    page = page.context.browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(90_000)
    t = time.time()
    page.goto(app_url + "?tab=dissect&layer=layer6&unit=3", wait_until="load")
    sync_api.expect(page.locator("#dissect_layer input")).to_have_value("layer6", timeout=60_000)
    page.wait_for_selector("#dissect_top img")
    seconds = time.time() - t
    assert page.locator("#dissect_unit input").input_value() == "3"
    _shot(page, "link_dissect")
    page.locator("#link_copy").click()
    sync_api.expect(page.locator("#link_box textarea, #link_box input").first).to_have_value(
        app_url.rstrip("/") + "/?tab=dissect&layer=layer6&unit=3", timeout=30_000)
    page.goto(app_url + "?tab=explore&images=100-103&unit=x", wait_until="load")
    sync_api.expect(page.locator("#link_notice")).to_contain_text("unit='x' ignored", timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('#explore_gallery .caption-label, "
                           "#explore_gallery img')].length >= 4")
    sync_api.expect(page.locator("#explore_gallery")).to_contain_text("#100")
    print(f"link restored the Dissect view in {seconds:.1f} s")
    page.close()
