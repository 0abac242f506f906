"""The host-neutral service core: typed calls in, typed answers out (``calls.Request`` -> ``service.ExplainService``
-> ``calls.Answer``); limits, deadlines, metrics, and the galore.v1 <-> engine conversion. Every host is a thin
adapter over it: handlers/ (TorchServe), galore_kserve/ (KServe), ``galore explain --local``."""
