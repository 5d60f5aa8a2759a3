"""A small training loop fed by augserve: the two-line integration, on CPU or GPU.

    cargo run --release -- serve --listen-uds /tmp/augserve.sock &   # serves the demo dataset
    python clients/python/examples/train_resnet_stub.py --addr unix:///tmp/augserve.sock

Under torchrun, each process reads its own shard (RANK / WORLD_SIZE) with no other change.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import augserve
from augserve.torch import AugServeIterableDataset


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


def tiny_resnet(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Block(16, 32, 2),
        Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="unix:///tmp/augserve.sock", help="server: unix:///path or host:port")
    p.add_argument("--dataset", default="demo")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=96, help="training resolution")
    p.add_argument("--max-steps", type=int, default=0, help="steps per epoch (0 = whole epoch)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--transport", default="inline", choices=["inline", "shm", "cuda_ipc"],
                   help="how batches travel from a server on this host (shm: shared memory)")
    args = p.parse_args()
    device = torch.device(args.device)

    with augserve.Client(args.addr) as client:
        (info,) = [d for d in client.datasets() if d.name == args.dataset]
    spec = augserve.PipelineSpec(
        width=args.size,
        height=args.size,
        color=augserve.ColorJitter(brightness=0.3, contrast=0.3),
        mix=augserve.Mix(mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=info.num_classes),
        dtype="float16" if device.type == "cuda" else "float32",
    )

    # The integration: a dataset of ready batches, and a DataLoader that does not re-batch them.
    ds = AugServeIterableDataset(args.addr, args.dataset, spec, batch_size=args.batch_size, device=device,
                                 transport=args.transport)
    loader = DataLoader(ds, batch_size=None)

    model = tiny_resnet(info.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(args.epochs):
        ds.set_epoch(epoch)
        model.train()
        started, seen, total_loss, steps = time.perf_counter(), 0, 0.0, 0
        for step, (images, soft_targets) in enumerate(loader):
            if args.max_steps and step >= args.max_steps:
                break
            logits = model(images.float())
            loss = torch.sum(-soft_targets * F.log_softmax(logits, dim=1), dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += images.shape[0]
            total_loss += loss.item()
            steps += 1
        secs = time.perf_counter() - started
        print(
            f"epoch {epoch}: {steps} steps, mean loss {total_loss / max(steps, 1):.3f}, "
            f"{seen / secs:.0f} images/s on {device}"
        )


if __name__ == "__main__":
    main()
