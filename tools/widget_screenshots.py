"""Screenshots of the book's widget before and after colorizing an old photo, at desktop and phone widths.

Serves a built HTML folder (the book's `_build/html`, or `tools/widget_assets.py`'s page) on 127.0.0.1,
opens PAGE in headless Chromium (Debian's /usr/bin/chromium, driven by playwright), and for each width
saves the widget before a photo is chosen and after the first old photo of the picker is colorized.

    python tools/widget_screenshots.py _build/html book/index.html -o docs/widget
"""

from __future__ import annotations

import argparse
import functools
import http.server
import threading
from pathlib import Path

WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="the folder to serve")
    parser.add_argument("page", help="the page, relative to the folder (e.g. book/index.html)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(args.html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{args.page}"
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        for name, (width, height) in WIDTHS.items():
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            widget = page.wait_for_selector(".colorlab-widget[data-state='idle']")
            widget.scroll_into_view_if_needed()
            widget.screenshot(path=str(args.out / f"widget_{name}_before.png"))
            page.select_option("select.clw-old", index=1)
            page.wait_for_selector(".colorlab-widget[data-state='done']", timeout=300_000)
            widget.screenshot(path=str(args.out / f"widget_{name}_after.png"))
            print(f"{name} ({width} px): {page.inner_text('.clw-status')}")
            page.close()
        browser.close()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
