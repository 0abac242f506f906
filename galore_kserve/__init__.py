"""The KServe host: the same engine, options, limits, batching, errors and metrics as the TorchServe handler, served
by the ``kserve`` package's ModelServer (v1 ``:predict`` / ``:explain``, Open Inference Protocol v2 over REST and
gRPC, health, readiness and model metadata). ``python -m galore_kserve`` starts it; README "Serve"."""
