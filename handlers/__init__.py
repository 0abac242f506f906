"""TorchServe adapter: wire bytes <-> galore.v1 protobuf <-> galore.Engine. No science here."""
