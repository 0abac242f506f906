"""Backbone forward with and without BatchNorms folded into the convolutions (galore.model.fold_batch_norms), batch 8,
224 px, channels_last, no_grad, 2 threads; BatchNorm statistics drawn away from identity, as trained nets have them.

    .venv/bin/python benchmarks/fold_batch_norms.py

Prints per architecture: BatchNorms left in each backbone, the median of 5 timed rounds (ms, interleaved), and the
largest difference of F relative to its largest value.
"""
import time, torch, torchvision
from galore.model import fold_batch_norms, split_classifier
torch.set_num_threads(2)
torch.manual_seed(0)
from galore.zoo import efficientnet_lite0

for arch in ["efficientnet_lite0", "resnet50", "vgg16_bn", "mobilenet_v2"]:
    if arch == "efficientnet_lite0":  # its ImageNet weights and statistics (convolutions traced as torch.conv2d)
        m = efficientnet_lite0().eval()
    else:
        m = getattr(torchvision.models, arch)().eval()
        for mod in m.modules():  # BatchNorm statistics away from identity, as trained nets have them
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.2, 0.2)
    split = split_classifier(m)
    plain = split.backbone.to(memory_format=torch.channels_last)
    fused = fold_batch_norms(split.backbone).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 224, 224).to(memory_format=torch.channels_last)
    nbn = lambda q: sum(isinstance(z, torch.nn.BatchNorm2d) for z in q.modules())
    with torch.no_grad():
        for _ in range(2): fused(x); plain(x)
        ts = {"fused": [], "plain": []}
        for _ in range(5):
            for name, q in (("fused", fused), ("plain", plain)):
                s = time.perf_counter(); q(x); ts[name].append(time.perf_counter() - s)
        a, b = fused(x), plain(x); d = ((a - b).abs().max() / b.abs().max()).item()
    print(arch, "BN left fused/plain:", nbn(fused), nbn(plain), {k: round(sorted(v)[2]*1000, 1) for k, v in ts.items()}, "rel max diff %.2e" % d)
