"""What a visitor waits for in a real browser (headless Chromium through Playwright; issues #20,
#22), on the default model with the app's own queue and launch settings, server in this process:

- a page opening on Explore until its 16 samples are on screen (every image decoded), on a first
  visit (a fresh browser context: nothing cached) and for a returning visitor (scripts cached);
- Explore's Random button, from the click to its 16 new samples on screen;
- the first visit of each tab (Paint, Dissect, Watermarks, Rewrite), from the click to its view;
- a link to a Dissect unit (``?tab=dissect&layer=...&unit=...``) until its top images show, first
  visit and returning; and, in the same run, the first visit of the same link on a second server
  without the link pages (demos/link_pages.py), where an event brings the view;
- a Paint stroke, from the mouse's release to the new image on the brush canvas.

Each is the median of 7 pages (``--quick``: 3). Skipped without Chromium and Playwright
(``bash .ci/run`` installs both)."""
import shutil
import time

import numpy as np

from bench import row

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOWN = """sel => { const ims = [...document.querySelectorAll(sel)];
  return ims.filter(i => i.complete && i.naturalWidth > 0).length; }"""
VIEWPORT = {"width": 1280, "height": 1100}
# what shows that a tab's first view is there (JS expressions)
_IMGS = "[...document.querySelectorAll('{}')].filter(i => i.complete && i.naturalWidth > 0).length >= {}"
TAB_VIEWS = {"Paint": _IMGS.format("#paint_canvas img.sc-bg", 1),
             "Dissect": _IMGS.format("#dissect_gallery img", 8),
             "Watermarks": "(document.querySelector('#wm_units_note') || {}).textContent?.includes('unit')",
             "Rewrite": _IMGS.format("#rewrite_gallery img", 12)}
NEW_SHOWN = """([sel, old]) => [...document.querySelectorAll(sel)].filter(
  i => !old.includes(i.getAttribute('src')) && i.complete && i.naturalWidth > 0).length"""


def _images_shown(page, selector: str, n: int, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(f"() => ({SHOWN})({selector!r}) >= {n}", timeout=timeout_ms)


def run(quick: bool = False) -> list[dict]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("browser: skipped (no Chromium or Playwright; bash .ci/run installs them)")
        return []
    from core.settings import model_settings
    from demos import build_app
    from demos.settings import QUEUE, launch_options
    from tests.conftest import close, free_port, stroke
    reps = 3 if quick else 7
    demo = build_app()
    demo.queue(**QUEUE)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, **launch_options())
    plain = build_app()               # no link pages: a link's view comes by the restoring event
    plain.queue(**QUEUE)
    _, plain_url, _ = plain.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                   quiet=True, **{**launch_options(), "app_kwargs": {}})
    import core
    layer = model_settings(core.load_model("default")).paint_layer
    times = {key: [] for key in ("open", "open_warm", "random", "link", "link_event", "link_warm", "stroke")}

    def timed(key, page, target, selector, n, count):
        t = time.perf_counter()
        page.goto(target, wait_until="commit")
        _images_shown(page, selector, n)
        if count:
            times[key].append(time.perf_counter() - t)

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            warm = browser.new_context(viewport=VIEWPORT)      # a returning visitor: assets cached
            for i in range(reps + 1):          # the first round warms the server's caches: not counted
                link = f"{url}?tab=dissect&layer={layer}&unit={i}"
                page = browser.new_page(viewport=VIEWPORT)     # a first visit: a fresh context
                timed("open", page, url, "#explore_gallery img", 16, i)
                old = page.eval_on_selector_all("#explore_gallery img", "ims => ims.map(i => i.getAttribute('src'))")
                t = time.perf_counter()
                page.click("#explore_random")
                page.wait_for_function(f"a => ({NEW_SHOWN})(a) >= 16", arg=["#explore_gallery img", old],
                                       timeout=60_000, polling="raf")
                if i:
                    times["random"].append(time.perf_counter() - t)
                page.close()
                page = browser.new_page(viewport=VIEWPORT)
                timed("link", page, link, "#dissect_top img", 1, i)
                page.close()
                page = browser.new_page(viewport=VIEWPORT)
                timed("link_event", page, link.replace(url, plain_url), "#dissect_top img", 1, i)
                page.close()
                page = warm.new_page()
                timed("open_warm", page, url, "#explore_gallery img", 16, i)
                for tab, shown in TAB_VIEWS.items():      # each tab's first visit in this page
                    t = time.perf_counter()
                    page.get_by_role("tab", name=tab).click()
                    page.wait_for_function(f"() => {shown}", timeout=60_000, polling="raf")
                    if i:
                        times.setdefault(tab, []).append(time.perf_counter() - t)
                timed("link_warm", page, link, "#dissect_top img", 1, i)
                page.close()
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Paint").click()
            page.locator("#paint_info").filter(has_text="Image #").wait_for(timeout=60_000)
            page.locator("#paint_canvas canvas").first.wait_for()
            page.wait_for_timeout(1000)
            for i in range(reps + 1):
                before = page.locator("#paint_canvas img.sc-bg").get_attribute("src")
                stroke(page, "#paint_canvas", 0.2 + 0.07 * i)     # each a new place: a new edit
                t = time.perf_counter()
                page.wait_for_function(
                    "b => { const i = document.querySelector('#paint_canvas img.sc-bg');"
                    " return i && i.getAttribute('src') !== b && i.complete && i.naturalWidth > 0; }",
                    arg=before, timeout=60_000, polling="raf")
                if i:
                    times["stroke"].append(time.perf_counter() - t)
                page.wait_for_timeout(500)
            browser.close()
    finally:
        close(demo)
        close(plain)
    ms = lambda xs: round(float(np.median(xs)) * 1000)  # noqa: E731
    n = len(times["open"])
    return [row("browser", "page open: Explore's 16 samples on screen, first visit", ms(times["open"]), "ms",
                f"median of {n} fresh browser contexts (nothing cached); target <= 1000 ms (issue #22)"),
            row("browser", "page open: the same, returning visitor", ms(times["open_warm"]), "ms",
                f"median of {n}; the browser has the app's scripts cached"),
            row("browser", "Explore Random: click to 16 new samples on screen", ms(times["random"]), "ms",
                f"median of {n}; target <= 1000 ms (issue #22)"),
            row("browser", f"link ?tab=dissect&layer={layer}&unit=N: top images on screen, first visit",
                ms(times["link"]), "ms", f"median of {n} fresh contexts; target <= 2000 ms (issue #20)"),
            row("browser", "link: the same, first visit, the view sent by an event instead", ms(times["link_event"]),
                "ms", f"median of {n}; a server without link pages (demos/link_pages.py), same run"),
            row("browser", "link: the same, returning visitor", ms(times["link_warm"]), "ms",
                f"median of {n}; target <= 2000 ms (issue #20)"),
            row("browser", "first visit of a tab, click to its view: " + " / ".join(TAB_VIEWS),
                " / ".join(str(ms(times[tab])) for tab in TAB_VIEWS), "ms",
                f"medians of {n}; returning visitor, after the page opened on Explore"),
            row("browser", "paint stroke: release to the new image on the canvas", ms(times["stroke"]), "ms",
                f"median of {len(times['stroke'])}; target <= 250 ms (issue #22)")]
