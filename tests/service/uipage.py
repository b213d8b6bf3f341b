"""Driving the Gradio page in a real headless Chromium (the system's): the browser, sending a message, reading
the last answer, screenshots kept under the test's tmp dir and copied where a person looks at them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 90_000  # first answers load the router and embed on a busy 2-core CI machine
BOT = '#chat [data-testid="bot"]'
# Screenshots are also copied here (KONGMING_SCREENSHOTS) so that a person can look at them after the run.
SHOTS_ENV = "KONGMING_SCREENSHOTS"
# Records every distinct text of the last bot message, so the test sees the partial states of a stream.
WATCH_JS = """() => {
  window.__states = [];
  const chat = document.querySelector('#chat');
  const record = () => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    const text = bots.length ? bots[bots.length - 1].innerText : '';
    if (text && window.__states[window.__states.length - 1] !== text) window.__states.push(text);
  };
  new MutationObserver(record).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def chromium_path() -> str | None:
    return os.environ.get("KONGMING_CHROMIUM") or next(
        (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None
    )


def chromium() -> Iterator[Any]:
    """The system's Chromium under playwright, for a module-scoped `browser` fixture; skips without one."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium binary found: install Debian's `chromium` package or set KONGMING_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # playwright's own browser downloads are unreachable here; the system Chromium is driven directly.
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def offline_page(browser: Any, url: str, ready: str, **context: Any) -> Iterator[Any]:
    """A fresh page on `url`/ui/, once `ready` (a selector) shows, for a `page` fixture; after the test, fails it
    if the page asked anything of a host other than the service (the page must work offline)."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
    page.goto(url + "/ui/")
    page.wait_for_selector(ready, timeout=WAIT_MS)
    yield page
    ctx.close()
    assert not outside, f"the page reached outside the service (must work offline): {outside}"


def screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page PNG under `folder` (a pytest tmp dir), copied to $KONGMING_SCREENSHOTS when that is set."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get(SHOTS_ENV):
        out = Path(os.environ[SHOTS_ENV])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / path.name)
    return path


def send(page: Any, text: str, route: str) -> None:
    page.locator("#route").get_by_label(route, exact=True).check()
    page.evaluate(WATCH_JS)
    page.fill("#message textarea", text)
    page.click("#send")


def last_bot(page: Any, contains: str) -> str:
    from playwright.sync_api import expect

    bot = page.locator(BOT).last
    expect(bot).to_contain_text(contains, timeout=WAIT_MS)
    return str(bot.inner_text())
