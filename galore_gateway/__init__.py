"""grpc.aio gateway: typed ``galore.v1.Explainer`` in front of TorchServe's gRPC inference API."""
