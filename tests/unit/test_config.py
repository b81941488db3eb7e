"""Settings refuse, at start, combinations that could not work."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings


def test_a_batch_larger_than_the_buffer_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"HR_MAX_BATCH=1000 .*HR_MAX_BUFFER_ROWS=999"):
        Settings.from_env({"HR_MAX_BATCH": "1000", "HR_MAX_BUFFER_ROWS": "999"})
    assert Settings.from_env({"HR_MAX_BATCH": "999", "HR_MAX_BUFFER_ROWS": "999"}).max_batch == 999
