"""Deterministic ImageNet-style inputs from photos that Python packages ship.

Ten photos: scikit-image's astronaut, coffee, chelsea, rocket, stereo_motorcycle (left),
camera, clock (greyscale, repeated to RGB); scikit-learn's china and flower
(`load_sample_images`); matplotlib's grace_hopper.jpg. Each gives `per_photo` views: the
standard resize-256/centre-crop-224 view, its mirror image, then crops of 25-100% of the
area with aspect ratio 3/4-4/3 from a seeded generator, mirrored at random, resized to
224x224 (bilinear). Normalised with the ImageNet mean and standard deviation.

    from photos import photo_batch   # in a script of tools/
    x, names = photo_batch(200)          # float32 [200,3,224,224], "photo#view" names

Needs scikit-image, scikit-learn, matplotlib and Pillow (bench-only).
"""

from __future__ import annotations

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 224


def _rgb(a):
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3].astype(np.uint8))


def photos():
    """[(name, uint8 HxWx3)] in a fixed order."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = [(n, getattr(skimage.data, n)()) for n in ("astronaut", "coffee", "chelsea", "rocket")]
    out.append(("motorcycle", skimage.data.stereo_motorcycle()[0]))
    out += [(n, getattr(skimage.data, n)()) for n in ("camera", "clock")]
    sk = load_sample_images()
    for path, img in zip(sk.filenames, sk.images):
        out.append((path.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0], img))
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        out.append(("grace_hopper", np.asarray(im.convert("RGB"))))
    return [(n, _rgb(a)) for n, a in out]


def _resize(img, w, h):
    from PIL import Image
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def _centre(img):
    h, w = img.shape[:2]
    s = 256 / min(h, w)
    img = _resize(img, max(SIZE, round(w * s)), max(SIZE, round(h * s)))
    h, w = img.shape[:2]
    top, left = (h - SIZE) // 2, (w - SIZE) // 2
    return img[top:top + SIZE, left:left + SIZE]


def _random_crop(img, rng):
    h, w = img.shape[:2]
    for _ in range(20):
        area = h * w * rng.uniform(0.25, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return _resize(img[top:top + ch, left:left + cw], SIZE, SIZE)
    return _centre(img)


def views(img, n, seed):
    rng = np.random.default_rng(seed)
    centre = _centre(img)
    out = [centre, centre[:, ::-1]]
    while len(out) < n:
        crop = _random_crop(img, rng)
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return out[:n]


def normalise(batch_u8):
    """uint8 [N,H,W,3] -> float32 [N,3,H,W] with ImageNet normalisation."""
    x = (batch_u8.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def photo_batch(n=200, seed=0):
    """`n` deterministic views spread evenly over the photos: float32 [n,3,224,224] and names."""
    pics = photos()
    per = -(-n // len(pics))
    imgs, names = [], []
    for i, (name, img) in enumerate(pics):
        for j, v in enumerate(views(img, per, seed * 1000 + i)):
            imgs.append(v)
            names.append(f"{name}#{j}")
    order = np.arange(len(imgs))
    if n < len(imgs):  # take views round-robin so a small n still covers every photo
        order = np.argsort(np.array([int(s.split("#")[1]) for s in names]), kind="stable")[:n]
    return normalise(np.stack([imgs[k] for k in order])), [names[k] for k in order]


if __name__ == "__main__":
    x, names = photo_batch()
    print(x.shape, x.dtype, float(x.mean()), float(x.std()), names[:3], names[-3:])
