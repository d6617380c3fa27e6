"""Faces in photos -> FER2013-like 48x48 grayscale crops, and annotated copies.

`load_image` reads any image to grayscale uint8 (EXIF rotation applied, so boxes line
up with what a viewer shows); `find_faces` runs OpenCV's frontal-face Haar cascade
(shipped in the opencv wheel, no download); `crop_face` cuts a FER2013-framed square
around a box; `annotate` draws boxes and labels on a copy of the photo.

numpy, OpenCV and pillow only: no keras here, so faces are found before (and
without) loading a model.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferhpo.atomic import atomic_path
from ferhpo.errors import FerhpoError

SIZE = 48  # FER2013's side
Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the (EXIF-rotated) image

# A FER2013 image spans ~1.2x the side of the Haar box around its face, centred: the
# median over 400 FER2013 test images upscaled 4x was 1.19 (quartiles 1.14-1.27), and
# astronaut crops at 1.2x look framed like them (forehead to chin, ears at the edge).
FACE_MARGIN = 1.2
CASCADE = "haarcascade_frontalface_default.xml"
# Detection parameters: OpenCV's usual 1.1 / 5 keeps false positives rare on photos
# (1.05 found a second "face" on the astronaut's suit). A face must span MIN_FACE px
# and 1/MIN_FACE_FRACTION of the shorter side of the searched image: smaller ones are
# mostly the cascade's false positives on textures (four on the astronaut's suit when
# the photo is upscaled), and too small to show an expression anyway.
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE = 30
MIN_FACE_FRACTION = 20
# Photos larger than this (longest side) are searched on a downscaled copy: the
# cascade takes seconds on a camera's 4000x3000 and finds more false positives there.
MAX_DETECT_SIDE = 1024
#: The most pixels an image may have to be decoded (pillow's own bound, made an error).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
# What cv2.imwrite can write; an annotated copy of anything else is written as .png.
WRITABLE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")


class ImageError(FerhpoError):
    """A file is not a readable image, or an annotated copy cannot be written."""


# --------------------------------------------------------------------------- reading


def _open(path: str | os.PathLike) -> Image.Image:
    """The first frame of an image file, decoded, with its EXIF orientation applied.

    An image of more than `MAX_PIXELS` pixels is refused before it is decoded: a small
    file can declare a huge image (a decompression bomb) and take the machine's memory.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)
                im.load()
                return ImageOps.exif_transpose(im)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(
            f"cannot read {path}: the image is too large to decode safely (more than {MAX_PIXELS:,} pixels); "
            f"expected a photo of at most that size"
        ) from None
    except UnidentifiedImageError:
        reason = "not an image file pillow can decode"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated, corrupt, unreadable
        reason = f"{type(exc).__name__}: {exc}".strip()
    # pillow is the first reader (EXIF, modes); OpenCV reads a few formats it cannot.
    raw = np.fromfile(path, np.uint8) if path.is_file() else np.empty(0, np.uint8)
    decoded = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if decoded is None:
        raise ImageError(f"cannot read {path} as an image ({reason}); expected a photo (jpg, png, bmp, tiff, webp, ...)")
    return Image.fromarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any pillow mode -> RGB: transparency over white, 16-bit and float scaled to 0-255."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file of any size, colour mode or format as grayscale uint8 (H, W).

    Raises ImageError (one line, naming the file) for anything that is not an image.
    """
    return np.asarray(_to_rgb(_open(path)).convert("L"), dtype=np.uint8)


def load_color(path: str | os.PathLike) -> np.ndarray:
    """The same image as `load_image`, in colour (BGR uint8, OpenCV's order), for drawing."""
    return cv2.cvtColor(np.asarray(_to_rgb(_open(path))), cv2.COLOR_RGB2BGR)


# --------------------------------------------------------------------------- detecting


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    haar = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(haar or "", CASCADE)
    classifier = cv2.CascadeClassifier(path) if haar and hasattr(cv2, "CascadeClassifier") else None
    if classifier is None or classifier.empty():
        raise FerhpoError(
            f"OpenCV {cv2.__version__} has no Haar face cascade ({CASCADE}); expected "
            f"opencv-python-headless 4.x (pip install 'opencv-python-headless>=4.8,<5'): OpenCV 5 dropped it"
        )
    return classifier


def _check_gray(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8 or min(gray.shape) < 1:
        raise ValueError(f"expected a grayscale uint8 image (H, W), got {gray.dtype} {gray.shape}")
    return gray


def find_faces(gray: np.ndarray) -> list[Box]:
    """Boxes (x, y, w, h) of the frontal faces in a grayscale image, largest first.

    An image that is already 48x48 is taken as one FER2013-style face as it is (the
    whole image), without detection: the cascade cannot find a face that fills its frame.
    """
    gray = _check_gray(gray)
    h, w = gray.shape
    if (h, w) == (SIZE, SIZE):
        return [(0, 0, SIZE, SIZE)]
    scale = min(1.0, MAX_DETECT_SIDE / max(h, w))
    small = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    smallest = max(MIN_FACE, round(min(small.shape) / MIN_FACE_FRACTION))
    found = _cascade().detectMultiScale(
        cv2.equalizeHist(small), scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(smallest, smallest)
    )
    boxes = []
    for x, y, bw, bh in np.asarray(found).reshape(-1, 4):
        x0, y0 = int(round(x / scale)), int(round(y / scale))
        x1, y1 = min(w, int(round((x + bw) / scale))), min(h, int(round((y + bh) / scale)))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    # largest first; among equals top to bottom, then left to right, so the order is stable
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[1], b[0]))


def crop_face(gray: np.ndarray, box: Box, margin: float = FACE_MARGIN) -> np.ndarray:
    """The 48x48 uint8 crop of a face box, framed as FER2013 faces are.

    The square of side `margin` x the box's longer side, centred on the box; where it
    runs off the image the edge pixels are repeated (the square is kept, so the face is
    not stretched). A box covering the whole image is an already-cropped face: no margin.
    """
    gray = _check_gray(gray)
    h, w = gray.shape
    x, y, bw, bh = (int(v) for v in box)
    if bw < 1 or bh < 1 or x < 0 or y < 0 or x + bw > w or y + bh > h:
        raise ValueError(f"box {tuple(box)} is not inside the {w}x{h} image")
    if (x, y, bw, bh) == (0, 0, w, h):
        region = gray
    else:
        side = max(1, int(round(max(bw, bh) * margin)))
        x0 = int(round(x + bw / 2 - side / 2))
        y0 = int(round(y + bh / 2 - side / 2))
        x1, y1 = x0 + side, y0 + side
        region = gray[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
        pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
        if any(pads):
            region = cv2.copyMakeBorder(region, *pads, borderType=cv2.BORDER_REPLICATE)
    if region.shape == (SIZE, SIZE):
        return np.ascontiguousarray(region, dtype=np.uint8)
    # area averaging when shrinking (no aliasing); bilinear when a small face is enlarged
    shrink = region.shape[0] >= SIZE and region.shape[1] >= SIZE
    return cv2.resize(region, (SIZE, SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- drawing


def annotate(
    image: str | os.PathLike | np.ndarray,
    faces: Sequence[tuple[Box, str, float]],
    out_path: str | os.PathLike,
) -> Path:
    """Write a copy of the image with each face's box and "label 0.83" drawn on it.

    `image` is a file (read in colour, rotated as `load_image` reads it, so the boxes
    line up) or an array (grayscale, BGR or BGRA). The copy keeps the original size; it
    is written atomically, in the format its extension names.
    """
    if isinstance(image, np.ndarray):
        canvas = image.copy()
        if canvas.ndim == 2:
            canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
        elif canvas.ndim == 3 and canvas.shape[2] == 4:
            canvas = cv2.cvtColor(canvas, cv2.COLOR_BGRA2BGR)
        canvas = np.ascontiguousarray(canvas, dtype=np.uint8)
    else:
        canvas = load_color(image)
    h, w = canvas.shape[:2]
    unit = max(h, w) / 640  # line and text scale with the photo
    thickness = max(1, int(round(2 * unit)))
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, 0.6 * unit)
    box_color, text_color = (0, 200, 0), (0, 0, 0)
    for (x, y, bw, bh), label, prob in faces:
        x, y, bw, bh = int(x), int(y), int(bw), int(bh)
        cv2.rectangle(canvas, (x, y), (x + bw - 1, y + bh - 1), box_color, thickness)
        text = f"{label} {prob:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, font_scale, max(1, thickness // 2))
        # the label sits on the box's top edge, inside the image
        ty = y - thickness if y - th - base - thickness >= 0 else y + bh + th + base
        ty = min(max(ty, th + base), h - 1)
        tx = min(max(x, 0), max(0, w - tw))
        cv2.rectangle(canvas, (tx, ty - th - base), (tx + tw, ty), box_color, cv2.FILLED)
        cv2.putText(canvas, text, (tx, ty - base), font, font_scale, text_color, max(1, thickness // 2), cv2.LINE_AA)
    out = Path(out_path)
    if out.suffix.lower() not in WRITABLE_EXTENSIONS:
        raise ImageError(f"cannot write {out}: expected one of {', '.join(WRITABLE_EXTENSIONS)} as its extension")
    try:
        with atomic_path(out, suffix=out.suffix) as tmp:
            if not cv2.imwrite(str(tmp), canvas):
                raise ImageError(f"cannot write the annotated image {out} (OpenCV refused {out.suffix})")
    except OSError as exc:
        raise ImageError(f"cannot write the annotated image {out}: {exc.strerror or exc}") from None
    return out
