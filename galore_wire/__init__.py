"""How the hosts and transports speak: the wire's terms, defined once, torch-free (stdlib and the engine's terms
only), outside the engine package.

* ``galore_wire.contract``: default addresses and ports, the ``galore-rpc`` / ``galore-deadline`` keys, the RPC
  names (``Call``), the Open Inference Protocol tensor names, message and id limits, and how the engine's enums
  are spelled in the galore.v1 proto;
* ``galore_wire.status``: the one table from an error's code name to its gRPC code and HTTP status, and the
  overload wording;
* ``galore_wire.backpressure``: the retry-delay estimate and the headers that carry it.
"""
