"""The Dagster UI as a user sees it: headless Chromium on a real ``dagster dev`` after the main job.

A temporary data folder gets the main job (``python -m emberharmony_assets.main``, one run over 4 days of a small
demo); then ``dagster dev -w workspace.yaml`` serves that folder's instance on 127.0.0.1 (a free port), and
Debian's Chromium, driven by Playwright's sync API (never a downloaded browser), opens:

- the global asset lineage (``/asset-groups``): the graph with its three groups;
- the second day's page of ``stride_windows``: the asset's Partitions tab with that day selected
  (``/assets/stride_windows?view=partitions&partition=<day>``), which shows the day's latest materialisation and
  its metadata. Asserted: the metadata entry ``rows`` is the number of demo rows of THAT day (counted here in
  the demo's DuckDB table), not the run's total, and the page shows no "Unsynced" badge after a clean run;
- ``pca_models``: its ``scree_plot`` metadata entry ([Show Markdown]) renders the scree plot as an image from a
  PNG data URL, loaded with a non-zero size.

The first-visit dialog ("Join the Dagster community", Skip) is dismissed when it appears. A full-page screenshot
of each page goes to ``$EMBERHARMONY_TEST_ARTIFACTS`` or ``.test-artifacts/ui/`` under the repository root (git
ignores it); the paths and the elapsed time are printed (``pytest -s`` shows them). The webserver's whole process
group is stopped at the end, whatever happened.

Where /usr/bin/chromium or Playwright is missing, the test fails under CI (``.ci/run`` installs Chromium, the dev
extra Playwright) and is skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from emberharmony_assets.testing import dagster_dev

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START, DAYS, ENTITIES = "2026-01-01", 4, 8  # 8 sensors x 48 readings a day: 384 rows a day, 1,536 in all
DAY = (date.fromisoformat(START) + timedelta(days=1)).isoformat()  # the second day
END = (date.fromisoformat(START) + timedelta(days=DAYS)).isoformat()
VIEWPORT = {"width": 1440, "height": 2000}  # Dagster's pages scroll inside the app: a tall window shows more of them
TIMEOUT_MS = 30_000
# buttons that dismiss a first-visit dialog (Dagster 1.13: "Join the Dagster community" ... [Skip] [Submit])
DISMISS = re.compile(r"^(Skip|Dismiss|Not now|No thanks|Maybe later|Got it)$", re.I)


def artifacts_folder() -> Path:
    folder = Path(os.environ.get("EMBERHARMONY_TEST_ARTIFACTS") or ROOT / ".test-artifacts" / "ui")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_browser():
    """Playwright's sync API and Debian's Chromium, or skip (fail under CI)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        reason = f"Playwright's Python package is missing ({error}): install the dev extra (pip install -e '.[dev]')"
        sync_playwright = None
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = (
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium; .ci/run "
            "does); this test never downloads a browser"
        )
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


def day_rows(database: Path, day: str) -> tuple[int, int]:
    """(rows of the demo table whose timestamp falls in ``day`` (UTC, the partitions' time zone), all rows)."""
    import duckdb

    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    with duckdb.connect(str(database), read_only=True) as connection:
        in_day = connection.execute(
            "SELECT count(*) FROM sensor_readings WHERE ts >= ? AND ts < ?", [start, start + timedelta(days=1)]
        ).fetchone()
        total = connection.execute("SELECT count(*) FROM sensor_readings").fetchone()
    assert in_day is not None and total is not None  # a count(*) always has its one row
    return int(in_day[0]), int(total[0])


def dismiss_first_visit_dialog(page, wait_ms: int = 0) -> bool:
    """Click the dismiss button of a first-visit dialog if one shows (within ``wait_ms``); True if it did."""
    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("button", name=DISMISS))
    try:
        dialog.first.wait_for(state="visible", timeout=max(wait_ms, 1))
    except Exception:  # noqa: BLE001 - none showed: nothing to dismiss
        return False
    dialog.first.get_by_role("button", name=DISMISS).first.click()
    dialog.first.wait_for(state="hidden")
    return True


def open_page(page, base: str, path: str) -> None:
    page.goto(base + path, wait_until="networkidle")
    dismiss_first_visit_dialog(page)


def settle(page) -> None:
    """Wait until the page's GraphQL queries are done (data shown after the first paint, such as stale status)."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)
    page.wait_for_load_state("networkidle")


def metadata_entries(page) -> dict[str, str]:
    """The metadata entries shown on the page, key to value as displayed: rows of a table whose first cell is
    the key and the second the value (rows of tables nested in a value, such as markdown tables, are not entries;
    the first table that shows a key wins)."""
    return page.evaluate(
        """() => {
            const entries = {};
            for (const table of document.querySelectorAll('table')) {
                if (table.parentElement.closest('table')) continue;  // a table inside a value
                for (const row of table.rows) {
                    if (row.cells.length < 2) continue;
                    const key = row.cells[0].innerText.trim();
                    if (key && !(key in entries)) entries[key] = row.cells[1].innerText.trim();
                }
            }
            return entries;
        }"""
    )


def screenshot(page, name: str, saved: list[Path]) -> None:
    path = artifacts_folder() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    saved.append(path)
    print(f"screenshot: {path}")


def test_the_ui_shows_each_day_its_own_figures_and_the_scree_plot(tmp_path):
    sync_playwright = require_browser()
    from playwright.sync_api import expect

    started = time.monotonic()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBERHARMONY_", "DAGSTER_"))}
    main = subprocess.run(
        [
            sys.executable,
            "-m",
            "emberharmony_assets.main",
            "--entities",
            str(ENTITIES),
            "--days",
            str(DAYS),
            "--start",
            START,
            "--backend",
            "numpy",
            "--home",
            str(home),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert main.returncode == 0, main.stdout[-3000:] + main.stderr[-3000:]
    job_s = time.monotonic() - started
    expected_rows, total_rows = day_rows(home / "demo.duckdb", DAY)
    assert 0 < expected_rows < total_rows, (expected_rows, total_rows)

    saved: list[Path] = []
    server_s = float("nan")
    try:
        with dagster_dev(
            home / "dagster_home", home, workspace=ROOT / "workspace.yaml", partitions=(START, END)
        ) as server:
            base = server.url
            server_s = time.monotonic() - started
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport=VIEWPORT)
                    page.set_default_timeout(TIMEOUT_MS)
                    expect.set_options(timeout=TIMEOUT_MS)

                    # 1. the global asset lineage; a fresh instance's first visit may open a dialog: dismiss it
                    page.goto(base + "/asset-groups", wait_until="networkidle")
                    dismissed = dismiss_first_visit_dialog(page, wait_ms=5_000)
                    print(f"first-visit dialog {'dismissed' if dismissed else 'not shown'}")
                    expect(page.get_by_text("Global asset lineage").first).to_be_visible()
                    for group in ("ingest", "preprocessing", "windows"):
                        expect(page.get_by_text(group, exact=True).first).to_be_visible()
                    expect(page.get_by_role("dialog")).to_have_count(0)
                    settle(page)
                    screenshot(page, "1-asset-lineage", saved)

                    # 2. the second day of stride_windows: Partitions tab, that day selected, its latest materialisation
                    open_page(page, base, f"/assets/stride_windows?view=partitions&partition={DAY}")
                    expect(page.get_by_text("Latest materialization").first).to_be_visible()
                    expect(page.get_by_text(DAY, exact=True).first).to_be_visible()
                    expect(page.get_by_text("Metadata", exact=True).first).to_be_visible()
                    page.get_by_role("cell").first.wait_for()  # the metadata table
                    settle(page)
                    screenshot(page, f"2-stride_windows-{DAY}", saved)
                    entries = metadata_entries(page)
                    rows_shown = entries.get("rows")
                    print(
                        f"stride_windows {DAY}: metadata rows = {rows_shown!r}; the day has {expected_rows} demo rows, "
                        f"the run {total_rows}"
                    )
                    unsynced_texts = page.get_by_text("Unsynced").all_inner_texts()  # Dagster's badge: "Unsynced (n)"
                    print(f"stride_windows {DAY}: 'Unsynced' texts on the page: {unsynced_texts}")

                    # the same day of window_carry, which depends on its own day before (where a false badge was)
                    open_page(page, base, f"/assets/window_carry?view=partitions&partition={DAY}")
                    expect(page.get_by_text("Latest materialization").first).to_be_visible()
                    page.get_by_role("cell").first.wait_for()
                    settle(page)
                    screenshot(page, f"2b-window_carry-{DAY}", saved)
                    carry_unsynced = page.get_by_text("Unsynced").all_inner_texts()
                    print(f"window_carry {DAY}: 'Unsynced' texts on the page: {carry_unsynced}")

                    # 3. pca_models: the scree plot, behind its metadata entry's [Show Markdown]
                    open_page(page, base, "/assets/pca_models")
                    entry = page.get_by_role("row").filter(has=page.get_by_role("cell", name="scree_plot", exact=True))
                    expect(entry).to_have_count(1)
                    entry.get_by_text("Show Markdown").click()
                    dialog = page.get_by_role("dialog").filter(has_text="scree_plot")
                    image = dialog.locator("img")
                    expect(image.first).to_be_visible()
                    image.first.evaluate("i => i.decode()")  # loaded (rejects on a broken image)
                    src = image.first.get_attribute("src") or ""
                    size = image.first.evaluate("i => [i.naturalWidth, i.naturalHeight]")
                    settle(page)
                    screenshot(page, "3-pca_models-scree_plot", saved)
                    print(f"pca_models scree plot: <img src={src[:40]}...> {size[0]}x{size[1]}")
                finally:
                    browser.close()
    finally:
        print(
            f"elapsed {time.monotonic() - started:.1f} s (main job {job_s:.1f} s, webserver up at "
            f"{server_s:.1f} s); screenshots: {', '.join(map(str, saved))}"
        )

    # (a) the day's page leads with the day's own figures: rows of THAT day, not the run's total
    assert rows_shown is not None, (
        f"stride_windows {DAY}: its latest materialisation's metadata has no 'rows' "
        f"entry (the day's own row count, {expected_rows}); it shows {entries}"
    )
    assert rows_shown.replace(",", "") != str(total_rows), (
        f"stride_windows {DAY}: 'rows' shows {rows_shown}, the run's total, not the day's {expected_rows}"
    )
    assert rows_shown.replace(",", "") == str(expected_rows), (
        f"stride_windows {DAY}: 'rows' shows {rows_shown}, the day has {expected_rows} demo rows"
    )
    # (b) after a clean run nothing reads as out of date
    assert not unsynced_texts, f"stride_windows {DAY} shows {unsynced_texts} after a clean run"
    assert not carry_unsynced, f"window_carry {DAY} shows {carry_unsynced} after a clean run"
    # (c) the scree plot is an image made from the PNG in the metadata
    assert src.startswith("data:image/png;base64,"), src[:80]
    assert size[0] > 0 and size[1] > 0, size
