"""Client side of galore-serve: gRPC/REST client (``client``), CLI, report rendering and load tester."""
