"""Photos for the KServe tests (the deployment is tests/conftest.py's ``service``)."""
from tests.serving.conftest import chelsea, coffee, encode  # noqa: F401 - fixtures and helper reused here
