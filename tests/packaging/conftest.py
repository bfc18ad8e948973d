import pytest

from tests.support.wheels import build_wheelhouse


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """pgpulse's wheel and wheels of everything it may need (tests/support/wheels.py)."""
    return build_wheelhouse(tmp_path_factory.mktemp("wheel"))
