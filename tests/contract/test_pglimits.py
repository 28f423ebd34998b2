"""``contract.pglimits.unstorable_at``: the one test every kept string passes on ingest (NUL and lone
surrogates cannot be stored), with its ASCII fast path, against the regular expression it stands for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.pglimits import UNSTORABLE, json_error, text_error, unstorable_at


def _by_regex(value: str) -> int:
    bad = UNSTORABLE.search(value)
    return -1 if bad is None else bad.start()


@pytest.mark.parametrize(("value", "at"), [
    ("", -1), ("plain ascii", -1), ("nul\x00here", 3), ("\x00", 0),  # ASCII: the C scan
    ("café", -1), ("café\x00", 4), ("é\ud800", 1), ("\udfff ascii after", 0), ("😀 pair", -1),  # not ASCII
    ("x" * 10_000 + "\x00", 10_000),
])
def test_unstorable_at_finds_nul_and_lone_surrogates(value: str, at: int) -> None:
    assert unstorable_at(value) == at == _by_regex(value)


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())))
def test_unstorable_at_agrees_with_the_regex_on_any_text(value: str) -> None:
    assert unstorable_at(value) == _by_regex(value)


def test_the_errors_name_the_first_bad_character() -> None:
    assert text_error("ok\x00", "f") == {"field": "f", "code": "invalid_character",
                                        "message": "contains U+0000 (NUL) at offset 2, which cannot be stored"}
    assert text_error("é\ud800", "f")["message"] == (  # type: ignore[index]
        "contains a lone UTF-16 surrogate at offset 1, which cannot be stored")
    assert json_error({"a": ["fine", "b\x00"]})["field"] == "a[1]"  # type: ignore[index]
    assert json_error({"k\x00": 1})["field"] == "<key>"  # type: ignore[index]
    assert json_error({"a": ["fine", "b\x00"]}, strings=False) is None
