"""Take docs/serve_page.png: `minicream serve` with the shipped model, one generation, in headless Chromium.

    .venv/bin/python docs/serve_screenshot.py [--out docs/serve_page.png]
"""
from __future__ import annotations

import argparse
import tempfile

from playwright.sync_api import sync_playwright

from minicream.serve import ServeSettings, create_app
from minicream.serve.server import serve_in_thread

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/serve_page.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        app = create_app(None, ServeSettings(output_dir=out_dir, token=None))
        with serve_in_thread(app) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(url + "/")
            page.locator("#sampler option").first.wait_for(state="attached")
            page.fill("#prompt", "red apple")
            page.fill("#negative_prompt", "blurry")
            page.uncheck("#random_seed")
            page.fill("#seed", "1")
            page.fill("#num_images", "8")
            page.click("#generate")
            page.locator("#results .card img").nth(7).wait_for(timeout=300_000)
            page.wait_for_timeout(1000)  # let the progress bar hide
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
