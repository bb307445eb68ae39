"""Every test carries exactly one tier marker (docs/contributing.md: selecting tests by tier)."""

from __future__ import annotations

import pytest
from conftest import UNTIERED

pytestmark = pytest.mark.contract


def test_every_collected_test_has_exactly_one_tier(request):
    untiered = request.config.stash[UNTIERED]
    assert not untiered, f"{len(untiered)} tests need exactly one of the tier markers of pyproject.toml: {untiered[:20]}"
