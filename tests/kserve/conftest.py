"""Photos and clients for the KServe tests, as in tests/serving (the deployment is tests/conftest.py's ``service``)."""
from tests.serving.conftest import chelsea, coffee, encode, grpc_client, rest_client, rest_url  # noqa: F401
