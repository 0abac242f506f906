"""The development supervisor: ``python -m galore_supervisor`` (``make serve``) runs TorchServe or the KServe host
plus the gateway on localhost from a source checkout and restarts what exits (module ``deployment``). Tests and
benchmarks start their deployments with ``deployment.LocalService``. Not part of the served image."""
