"""The TorchServe adapter only (``galore_handler.py``): TorchServe's rows and context -> the service core's typed
calls (galore_service), its answers -> bytes, HTTP status and content type. No service logic, no science here."""
