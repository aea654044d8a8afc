"""EXIF through processing, with imgproxy's `strip_metadata` and `keep_copyright`.

The bug: `[images] strip_metadata = false` (and `IMGPROXY_STRIP_METADATA=false`, and the
URL's `sm:0`) was accepted and ignored. Every output lost its EXIF, and the copyright
notice that `keep_copyright` (on by default, as in imgproxy) keeps was dropped too.
"""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

import harness

pytestmark = pytest.mark.pixelport_only

SHARED = harness.REPO_ROOT.parent / "shared" / "images"
ARTIST, COPYRIGHT = 0x013B, 0x8298
ORIENTATION = 0x0112


def exif_of(content: bytes) -> dict:
    with Image.open(io.BytesIO(content)) as im:
        return dict(im.getexif()), im.size, im.format


@pytest.fixture(scope="module")
def source_jpeg(tmp_path_factory) -> bytes:
    """A 640x427 photo stored sideways (427x640) with orientation 6, which turns it back
    to 640x427 for display."""
    with Image.open(SHARED / "rocket-640x427.jpg") as im:
        sideways = im.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[ARTIST] = "Ann Example"
        exif[COPYRIGHT] = "(c) 2026 Ann Example"
        exif[ORIENTATION] = 6
        buf = io.BytesIO()
        sideways.save(buf, "JPEG", quality=90, exif=exif.tobytes())
        return buf.getvalue()


def serve(tmp_path, source: bytes, images_config: str = ""):
    d = harness.Daemon(tmp_path / "d", images_config=images_config).start()
    c = d.client()
    c.create_bucket(Bucket="photos")
    c.put_object(Bucket="photos", Key="p.jpg", Body=source, ContentType="image/jpeg")
    return d


def fetch(d, options: str, ext: str = "") -> bytes:
    r = requests.get(f"{d.images_url}/unsafe/{options}/plain/s3://photos/p.jpg{ext}", timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def test_defaults_keep_only_the_copyright_and_sm0_keeps_everything(tmp_path, source_jpeg):
    d = serve(tmp_path, source_jpeg)
    try:
        exif, size, _ = exif_of(fetch(d, "rs:fit:200:200"))
        assert exif.get(COPYRIGHT) == "(c) 2026 Ann Example", exif
        assert ARTIST not in exif and ORIENTATION not in exif, exif
        assert size[0] > size[1], size  # auto-rotated upright

        assert exif_of(fetch(d, "rs:fit:200:200/kcr:0"))[0] == {}

        for ext, fmt in (("", "JPEG"), ("@png", "PNG"), ("@webp", "WEBP")):
            exif, size, got = exif_of(fetch(d, "rs:fit:200:200/sm:0", ext))
            assert got == fmt
            assert exif.get(ARTIST) == "Ann Example", (fmt, exif)
            assert exif.get(COPYRIGHT) == "(c) 2026 Ann Example", (fmt, exif)
            # The pixels are upright now: a viewer must not rotate them again.
            assert exif.get(ORIENTATION) == 1, (fmt, exif)
            assert size[0] > size[1], (fmt, size)

        # Without auto-rotation the pixels stay as stored, and so does the orientation.
        exif, size, _ = exif_of(fetch(d, "rs:fit:200:200/sm:0/ar:0"))
        assert exif.get(ORIENTATION) == 6 and size[0] < size[1], (exif, size)
    finally:
        d.stop_all()


def test_strip_metadata_false_in_config_keeps_exif_by_default(tmp_path, source_jpeg):
    d = serve(tmp_path, source_jpeg, "strip_metadata = false\n")
    try:
        exif, _, _ = exif_of(fetch(d, "rs:fit:100:100"))
        assert exif.get(ARTIST) == "Ann Example", exif
        assert exif_of(fetch(d, "rs:fit:100:100/sm:1/kcr:0"))[0] == {}
    finally:
        d.stop_all()
