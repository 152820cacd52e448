"""The CPU allocator setting of the runtime."""

from __future__ import annotations

import sys

import pytest

from lmmrec.runtime import Runtime, keep_freed_memory


@pytest.fixture(autouse=True)
def _fresh_cache():
    keep_freed_memory.cache_clear()
    yield
    keep_freed_memory.cache_clear()


def test_a_users_malloc_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_the_settings_and_the_cpu_runtime_applies_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert Runtime.resolve("cpu").device.type == "cpu"
    assert keep_freed_memory.cache_info().currsize == 1  # resolve() called it
    assert keep_freed_memory() is True
