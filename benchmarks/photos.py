"""A held-out set of real object photos for the result-quality benchmarks: Tux Paint's stamps.

Debian's `tuxpaint-stamps-default` package ships a few hundred photographs of animals, fruit
and plants cut out on transparent backgrounds, sorted in folders by kind; every image is a
different photo, so a validation split of them is truly held out (unlike the demo's sample,
whose images are crops of six photos). Five kinds make five classes; each image is composited
on white and saved as a JPEG, a fifth of each class (chosen by a hash of its name, so the split
is stable) going to val/.

    python benchmarks/photos.py --out DIR    # DIR/train/<class>/*.jpg, DIR/val/<class>/*.jpg

Needs `apt-get download` (Debian's package registry) the first time: the .deb (161 MB) is kept
in DIR/.deb for later calls.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import subprocess
import sys

PACKAGE = "tuxpaint-stamps-default"
STAMPS = "usr/share/tuxpaint/stamps"
# class name -> stamp folder (every PNG below it, recursively)
CLASSES = {
    "mammal": "animals/mammals",
    "bird": "animals/birds",
    "insect": "animals/insects",
    "fruit": "food/fruit",
    "flower": "plants/flowers",
}
VAL_EVERY = 4  # one in four to val/
MAX_SIDE = 400


def _deb(cache: str) -> str:
    found = glob.glob(os.path.join(cache, f"{PACKAGE}_*.deb"))
    if found:
        return found[0]
    os.makedirs(cache, exist_ok=True)
    done = subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, capture_output=True,
                          text=True, check=False)  # fmt: skip
    found = glob.glob(os.path.join(cache, f"{PACKAGE}_*.deb"))
    if done.returncode != 0 or not found:
        sys.exit(f"error: apt-get download {PACKAGE} failed: {done.stderr.strip()[-300:]}")
    return found[0]


def make(out: str) -> dict[str, tuple[int, int]]:
    """Write the folders (once); return {class: (train, val)} counts."""
    from PIL import Image

    cache = os.path.join(out, ".deb")
    root = os.path.join(cache, "x")
    if not os.path.isdir(os.path.join(root, STAMPS)):
        subprocess.run(["dpkg-deb", "-x", _deb(cache), root], check=True)
    counts = {}
    for name, folder in CLASSES.items():
        files = sorted(glob.glob(os.path.join(root, STAMPS, folder, "**", "*.png"), recursive=True))
        n = {"train": 0, "val": 0}
        for path in files:
            rel = os.path.relpath(path, os.path.join(root, STAMPS))
            digest = int(hashlib.sha256(rel.encode()).hexdigest(), 16)
            split = "val" if digest % VAL_EVERY == 0 else "train"
            target = os.path.join(out, split, name, rel.replace("/", "_")[:-4] + ".jpg")
            n[split] += 1
            if os.path.exists(target):
                continue
            image = Image.open(path).convert("RGBA")
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            white.alpha_composite(image)
            image = white.convert("RGB")
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            image.save(target, quality=92)
        counts[name] = (n["train"], n["val"])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for train/ and val/")
    counts = make(parser.parse_args().out)
    for name, (train, val) in counts.items():
        print(f"{name:8s} train {train:3d}  val {val:3d}")
    print(f"total    train {sum(t for t, _ in counts.values())}  val "
          f"{sum(v for _, v in counts.values())}")  # fmt: skip


if __name__ == "__main__":
    main()
