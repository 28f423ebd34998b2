"""Fixtures for the web page's browser tests: Debian's headless Chromium driven by Selenium through
``/usr/bin/chromedriver`` (an explicit Service path, so Selenium Manager never downloads a browser or a
driver), a real uvicorn server around the API committing to the test database, API keys made through
the admin API, and a tiny student model for a real distill job.

Screenshots land in a pytest temporary folder (its path is printed); with ``DISTILLERY_UPDATE_SCREENSHOTS=1``
the ones the docs show are also copied to ``docs/img/``. The tests skip only when chromium or chromedriver
is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.app.live import live_server
from tests.conftest import ADMIN_KEY

CHROMIUM = os.environ.get("DISTILLERY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DISTILLERY_CHROMEDRIVER", "/usr/bin/chromedriver")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
DOC_SHOTS = {"annotate", "job", "training-view"}  # the ones the docs show

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)


@pytest.fixture(scope="session")
def web_model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root with one tiny ChatML student (tokenizer trained on the synthetic task's text)."""
    from tests.jobs.conftest import _corpus
    from worker.training.tiny import CHATML_TEMPLATE, build_tiny_model

    root = tmp_path_factory.mktemp("web-models")
    build_tiny_model(root / "student", _corpus(), chat_template=CHATML_TEMPLATE, seed=0)
    return root


@pytest.fixture
def web_models(web_model_root: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny models as the server's models root (jobs name them: ``student``)."""
    monkeypatch.setattr(settings, "models_root", web_model_root)
    return web_model_root


@pytest.fixture
def server(committed_app: Any, settings: Any, database_url: str, database: Any,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API over HTTP (real commits; every table truncated afterwards). In-process workers read datasets
    from ``settings.database_url``."""
    monkeypatch.setattr(settings, "database_url", database_url)
    with live_server(committed_app) as base:
        yield base
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, workers CASCADE"))


@pytest.fixture
def admin(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as c:
        yield c


@pytest.fixture
def make_key(admin: httpx.Client) -> Callable[..., str]:
    def make(*scopes: str) -> str:
        name = f"web-{'-'.join(scopes)}-{uuid.uuid4().hex[:4]}"
        r = admin.post("/v1/keys", json={"name": name, "scopes": list(scopes)})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    return make


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    """``shot(driver, name)`` saves a PNG screenshot as a test artifact (and into docs/img on request)."""
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nweb screenshots: {folder}")

    def shot(driver: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        hide = "const t = document.getElementById('toast'); if (t) t.hidden = arguments[0];"
        driver.execute_script(hide, True)  # no message over the page
        driver.save_screenshot(str(path))
        driver.execute_script(hide, False)
        if os.environ.get("DISTILLERY_UPDATE_SCREENSHOTS") == "1" and name in DOC_SHOTS:
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_IMG / path.name)
        return path

    return shot


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1366,768", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_window_size(1366, 768)
    try:
        yield driver
    finally:
        driver.quit()
