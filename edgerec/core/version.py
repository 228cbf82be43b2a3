"""The release of edgerec; pyproject.toml says the same (tests/api/test_api.py checks it)."""

__version__ = "0.1.0"
