"""Helpers the browser tests share: open the page with a key, wait for things, read the page's state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 30.0


def wait(driver: Any, what: str, check: Callable[[Any], Any], timeout: float = WAIT) -> Any:
    # the page redraws parts of itself: an element found a moment ago may be gone, so look again
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored).until(
        check, message=f"timed out waiting for {what}")


def css(driver: Any, selector: str) -> Any:
    return wait(driver, selector, lambda d: d.find_element(By.CSS_SELECTOR, selector))


def open_page(driver: Any, base: str, key: str, route: str = "#/annotate") -> None:
    """Load the page, type the key into the key form (it is kept in sessionStorage) and go to ``route``."""
    driver.get(f"{base}/")
    field = css(driver, "#key-input")
    field.send_keys(key)
    css(driver, "#key-form button[type=submit]").click()
    wait(driver, "the key to be taken", lambda d: d.find_element(By.ID, "key-status").text.startswith("key set"))
    driver.execute_script("location.hash = arguments[0]", route)


def toast(driver: Any) -> str:
    return str(driver.find_element(By.ID, "toast").get_attribute("textContent"))
