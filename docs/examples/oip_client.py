"""Explain a photo through the KServe host's Open Inference Protocol (v2) with tritonclient (README "Serve").

    .venv/bin/python docs/examples/oip_client.py grpc 127.0.0.1:8081 docs/examples/chelsea.jpg
    .venv/bin/python docs/examples/oip_client.py http 127.0.0.1:8080 docs/examples/chelsea.jpg

Input ``images``: BYTES, one encoded image per element (raw bytes over gRPC; base64 text over REST, because KServe's
REST decoder turns binary BYTES into UTF-8 text). Request parameter ``options``: ExplainOptions in proto3 JSON.
Output ``explain_response``: BYTES [1], the ExplainResponse in proto3 JSON.
"""
import base64
import json
import sys

import numpy as np

MODEL = "efficientnet_lite0"


def explain(protocol: str, url: str, image: bytes, options: dict) -> dict:
    if protocol == "grpc":
        import tritonclient.grpc as triton

        data = np.array([image], dtype=object)
    else:
        import tritonclient.http as triton

        data = np.array([base64.b64encode(image)], dtype=object)
    images = triton.InferInput("images", [1], "BYTES")
    images.set_data_from_numpy(data, **({} if protocol == "grpc" else {"binary_data": False}))
    client = triton.InferenceServerClient(url)
    try:
        headers = {} if protocol == "grpc" else {"Content-Type": "application/json"}  # KServe reads JSON by it
        result = client.infer(MODEL, [images], parameters={"options": json.dumps(options)}, headers=headers)
    finally:
        client.close()
    return json.loads(result.as_numpy("explain_response")[0])


def main(argv: list[str]) -> None:
    protocol, url, path = (argv + ["grpc", "127.0.0.1:8081", "docs/examples/chelsea.jpg"][len(argv):])[:3]
    with open(path, "rb") as handle:
        response = explain(protocol, url, handle.read(), {"kinds": ["EXPLANATION_KIND_DELIBERATIVE"], "dims": [2]})
    image = response["images"][0]
    strongest = image["deliberative"][0]["insecurities"][0]
    print(image["topClasses"][0]["label"], "| strongest ambiguity:", " / ".join(strongest["labels"]))


if __name__ == "__main__":
    main(sys.argv[1:])
