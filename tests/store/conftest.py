"""Store fixtures: the same parametrisation as the engine tests."""

from tests.engine.conftest import store_factory, store_kind

__all__ = ["store_factory", "store_kind"]
