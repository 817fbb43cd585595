"""pyproject's pytest options make any warning an error, so a new one fails the suite instead of scrolling by."""
import warnings

import pytest


def test_a_warning_fails_the_test():
    with pytest.raises(UserWarning, match="deprecated"):
        warnings.warn("deprecated", UserWarning)
