"""The galore-serve client library: ``client`` (gRPC and REST clients), ``settings`` (ExplainSettings, ModelSummary),
``results`` (typed explanations), ``typed`` (proto <-> typed), ``errors`` and ``retry``. No torch, no plotting; the
``galore`` command line is the separate package ``galore_cli``."""
