"""Fixtures (registered as plugins by tests/conftest.py) and helpers shared by the tests."""
