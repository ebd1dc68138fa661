"""Fixtures for the console tests: a headless Chromium driven by Playwright, and the fake contract server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import pytest_asyncio

HERE = Path(__file__).parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("ADP_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def load_fake_gateway() -> ModuleType:
    """Import fake_gateway.py by path (tests/ is not a package; pytest runs with --import-mode=importlib)."""
    name = "adp_console_fake_gateway"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "fake_gateway.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        # The README's test command runs ensure_chromium.sh first; try it here too for direct pytest runs.
        subprocess.run(["bash", str(HERE / "ensure_chromium.sh")], check=False, timeout=600)
        path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed and could not be installed (tests/console/ensure_chromium.sh)")
    return path


@pytest_asyncio.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[object]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover
        pytest.skip("playwright is not installed (uv sync --all-packages installs the dev group)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture
async def fake_gateway() -> AsyncIterator[object]:
    gw = load_fake_gateway().FakeGateway()
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
