"""JPEG decoding at reduced DCT scale (Pillow ``draft``) against a full decode: time and fidelity.

    .venv/bin/python benchmarks/jpeg_draft.py                       # 3, 12 and 24 MP JPEGs of real photos
    .venv/bin/python benchmarks/jpeg_draft.py --sizes 12 --repeats 5

For each photo (skimage photos upscaled to the size and saved as JPEG, quality 92) the handler's ``decode_image``
runs once in full and once with ``min_side`` = 1x and 2x the model's resize side (the service uses
galore_service.decode.DRAFT_OVERSAMPLE). Printed: decode +
preprocess time per image, and for EfficientNet-Lite0's prediction: top-1 agreement and the largest absolute
difference of the top-5 probabilities between the two decodes.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import skimage.data
import torch
from PIL import Image

from engine_throughput import machine
from galore import Engine, ExplainOptions, ImageRequest
from galore_service.config import Limits
from galore_service.decode import decode_image

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "retina", "hubble_deep_field", "immunohistochemistry")


def jpeg(name: str, mp: float) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))
    w, h = img.size
    s = (mp * 1e6 / (w * h)) ** 0.5
    out = io.BytesIO()
    img.resize((round(w * s), round(h * s)), Image.BICUBIC).save(out, "JPEG", quality=92)
    return out.getvalue()


def timed(engine: Engine, data: bytes, min_side: int | None, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        image, size = decode_image(data, "images[0].data", Limits(), min_side)
        x, _ = engine.preprocess(image, size)
        times.append(time.perf_counter() - start)
    (result,) = engine.explain([ImageRequest(image, ExplainOptions(kinds=frozenset()), original_size=size)])
    return statistics.median(times), result, tuple(image.shape[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="3,12,24")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scales", default="1,2", help="min_side = resize side x these")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.default(device="cpu")
    print(f"Machine: {machine()}\n")
    print("| photo size | min_side | full decode + resize ms | reduced decode + resize ms | speed-up | decoded at "
          "| top-1 agreement | max abs. top-5 probability difference | disagreeing (full top-1 p / reduced) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mp in (float(s) for s in args.sizes.split(",")):
        data = {name: jpeg(name, mp) for name in PHOTOS}
        full = {name: timed(engine, data[name], None, args.repeats) for name in PHOTOS}
        for scale in (int(s) for s in args.scales.split(",")):
            side = scale * engine.preprocess.resize
            draft_ms, agree, diff, shape, odd = [], 0, 0.0, None, []
            for name in PHOTOS:
                t_draft, r_draft, shape = timed(engine, data[name], side, args.repeats)
                r_full = full[name][1]
                draft_ms.append(1000 * t_draft)
                top_f, top_d = r_full.top_classes[0], r_draft.top_classes[0]
                if top_f.class_id == top_d.class_id:
                    agree += 1
                else:
                    odd.append(f"{name} ({top_f.probability:.2f} / {top_d.probability:.2f})")
                probs = {c.class_id: c.probability for c in r_draft.top_classes}
                diff = max(diff, max(abs(c.probability - probs.get(c.class_id, 0.0)) for c in r_full.top_classes))
            f, d = statistics.median(1000 * full[n][0] for n in PHOTOS), statistics.median(draft_ms)
            print(f"| {mp:g} MP | {side} | {f:.0f} | {d:.0f} | {f / d:.1f}x | e.g. {shape[1]}x{shape[0]} | "
                  f"{agree}/{len(PHOTOS)} | {diff:.4f} | {', '.join(odd) or '-'} |", flush=True)


if __name__ == "__main__":
    main()
