"""The rest of imgproxy's delivery, against the real daemon (issue #15): animated WebP out of
animated GIF and WebP sources, modern formats by default (and imgproxy's defaults when
configured through IMGPROXY_*), eager presets in every negotiated format, client hints, and
the Cache-Control / ETag / Last-Modified switches.
"""

from __future__ import annotations

import io
import time
from email.utils import formatdate

import pytest
import requests
from PIL import Image

import harness
from test_cache import labeled, wait_eager

pytestmark = pytest.mark.pixelport_only

IMAGES = harness.REPO_ROOT.parent / "shared" / "images"
GIF = IMAGES / "edge-animated-8frames-160x120.gif"
PHOTO = IMAGES / "rocket-640x427.jpg"
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


def get(d, path: str, **kw) -> requests.Response:
    return requests.get(d.images_url + path, timeout=60, **kw)


def webp_durations(data: bytes) -> list[int]:
    """The display time of each ANMF chunk of an animated WebP (Pillow 11 does not report
    them per frame)."""
    import struct
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    out, i = [], 12
    while i + 8 <= len(data):
        kind, n = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        if kind == b"ANMF":
            out.append(int.from_bytes(data[i + 8 + 12:i + 8 + 15], "little"))
        i += 8 + n + (n & 1)
    return out


def frames(data: bytes) -> list[tuple[tuple[int, int], int]]:
    """(size, duration ms) of every frame, decoded with Pillow (durations of WebP from its
    ANMF chunks)."""
    img = Image.open(io.BytesIO(data))
    n = getattr(img, "n_frames", 1)
    durations = webp_durations(data) if img.format == "WEBP" and n > 1 else None
    out = []
    for i in range(n):
        img.seek(i)
        img.load()
        out.append((img.size, durations[i] if durations else img.info.get("duration", 0)))
    return out


def upload(d, bucket: str, **objects: bytes) -> None:
    s3 = d.client()
    s3.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


# -- animation ---------------------------------------------------------------------------


def test_gif_to_webp_keeps_every_frame_and_its_time(make_daemon):
    # Before: a GIF asked for as WebP came out as its first frame alone.
    d = make_daemon()
    upload(d, "anim", **{"a.gif": GIF.read_bytes()})
    source = frames(GIF.read_bytes())
    assert len(source) == 8
    r = get(d, "/unsafe/w:80/plain/s3://anim/a.gif@webp")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/webp"
    out = frames(r.content)
    assert [s for s, _ in out] == [(80, 60)] * 8, "every frame gets the same geometry"
    assert [t for _, t in out] == [t for _, t in source], "frame timing kept"
    assert Image.open(io.BytesIO(r.content)).info.get("loop") == 0
    gif = get(d, "/unsafe/w:80/plain/s3://anim/a.gif@gif")
    assert len(frames(gif.content)) == 8
    assert len(r.content) < len(gif.content), (len(r.content), len(gif.content))
    # Animated WebP as a source stays animated too, timing and all.
    upload(d, "anim2", **{"a.webp": r.content})
    again = get(d, "/unsafe/w:40/plain/s3://anim2/a.webp")
    assert again.headers["content-type"] == "image/webp"
    assert frames(again.content) == [((40, 30), t) for _, t in source]
    # AVIF and JPEG named in the URL take the first frame, as imgproxy does.
    for ext, fmt in (("avif", "AVIF"), ("jpg", "JPEG")):
        one = get(d, f"/unsafe/w:80/plain/s3://anim/a.gif@{ext}")
        assert one.status_code == 200, one.text
        img = Image.open(io.BytesIO(one.content))
        assert img.format == fmt and getattr(img, "n_frames", 1) == 1


def test_negotiation_never_makes_an_animation_still(make_daemon):
    # AVIF negotiation would keep one frame: a browser that takes AVIF and WebP gets
    # animated WebP; one that takes neither gets the animated GIF.
    d = make_daemon()
    upload(d, "anim", **{"a.gif": GIF.read_bytes(), "r.jpg": PHOTO.read_bytes()})
    chrome = get(d, "/unsafe/w:80/plain/s3://anim/a.gif", headers={"Accept": CHROME})
    assert chrome.headers["content-type"] == "image/webp", chrome.headers
    assert len(frames(chrome.content)) == 8
    plain = get(d, "/unsafe/w:80/plain/s3://anim/a.gif", headers={"Accept": "*/*"})
    assert plain.headers["content-type"] == "image/gif"
    assert len(frames(plain.content)) == 8
    # A still source still becomes AVIF for the same browser.
    still = get(d, "/unsafe/w:80/plain/s3://anim/r.jpg", headers={"Accept": CHROME})
    assert still.headers["content-type"] == "image/avif"


def test_the_frame_limit_still_holds_for_webp(make_daemon):
    d = make_daemon(images_config="max_animation_frames = 4\n")
    upload(d, "anim", **{"a.gif": GIF.read_bytes()})
    r = get(d, "/unsafe/w:80/plain/s3://anim/a.gif@webp")
    assert r.status_code == 200, r.text
    assert len(frames(r.content)) == 1, "over the limit: the first frame, as for GIF output"


# -- modern formats by default ------------------------------------------------------------


def test_modern_formats_by_default_and_imgproxy_defaults_through_its_environment(
        make_daemon, monkeypatch):
    # Pixelport's own defaults negotiate AVIF and WebP.
    d = make_daemon()
    upload(d, "neg", **{"r.jpg": PHOTO.read_bytes()})
    path = "/unsafe/w:100/plain/s3://neg/r.jpg"
    kinds = {accept: get(d, path, headers={"Accept": accept}).headers
             for accept in (CHROME, "image/webp,*/*", "*/*")}
    assert [h["content-type"] for h in kinds.values()] == [
        "image/avif", "image/webp", "image/jpeg"]
    assert all(h["vary"] == "Accept" for h in kinds.values())
    # Configured through imgproxy's environment: imgproxy's defaults (off) are kept...
    monkeypatch.setenv("IMGPROXY_QUALITY", "80")
    e = make_daemon()
    upload(e, "neg", **{"r.jpg": PHOTO.read_bytes()})
    r = get(e, path, headers={"Accept": CHROME})
    assert r.headers["content-type"] == "image/jpeg" and "vary" not in r.headers
    # ...unless that environment turns them on.
    monkeypatch.setenv("IMGPROXY_AUTO_WEBP", "true")
    f = make_daemon()
    upload(f, "neg", **{"r.jpg": PHOTO.read_bytes()})
    r = get(f, path, headers={"Accept": CHROME})
    assert r.headers["content-type"] == "image/webp" and r.headers["vary"] == "Accept"


EAGER = """
[[images.presets]]
name = "thumb"
options = "rs:fit:120:120"
eager = true
"""


def test_eager_presets_render_every_negotiated_format(make_daemon):
    # Before: eager presets rendered what a request without Accept gets, so the first
    # AVIF or WebP browser was a miss.
    d = make_daemon(extra_config=EAGER)
    upload(d, "eager", **{"r.jpg": PHOTO.read_bytes()})
    wait_eager(d, "ok", 1, timeout=30)
    for accept, kind in ((CHROME, "image/avif"), ("image/webp", "image/webp"),
                         ("*/*", "image/jpeg")):
        r = get(d, "/unsafe/pr:thumb/plain/s3://eager/r.jpg", headers={"Accept": accept})
        assert r.headers["content-type"] == kind
        assert r.headers["x-cache"] == "HIT", (accept, r.headers)
    assert labeled(d, "pixelport_eager_renders_total", result="error") == 0


# -- client hints ---------------------------------------------------------------------------


def test_client_hints_set_width_and_dpr_and_vary(make_daemon):
    d = make_daemon(images_config="enable_client_hints = true\n")
    upload(d, "chx", **{"r.jpg": PHOTO.read_bytes()})
    path = "/unsafe/plain/s3://chx/r.jpg@png"
    size = lambda r: Image.open(io.BytesIO(r.content)).size  # noqa: E731
    # No hints: the source's size; the response still varies by them.
    bare = get(d, path)
    assert size(bare) == (640, 427)
    for hint in ("Sec-CH-DPR", "DPR", "Sec-CH-Width", "Width"):
        assert hint in bare.headers["vary"], bare.headers
    assert "Sec-CH-Width" in bare.headers["accept-ch"]
    # A 400 device-pixel slot at dpr 2 is 200 layout pixels, rendered at 400.
    r = get(d, path, headers={"Sec-CH-Width": "400", "Sec-CH-DPR": "2"})
    assert size(r) == (400, 267), r.headers
    # The legacy names, and the URL's own width winning over the hint (dpr still applies).
    assert size(get(d, path, headers={"Width": "320"})) == (320, 214)
    assert size(get(d, "/unsafe/w:100/plain/s3://chx/r.jpg@png",
                    headers={"Width": "320", "DPR": "3"})) == (300, 200)
    # A hostile hint is ignored, not an error.
    assert size(get(d, path, headers={"Sec-CH-Width": "99999999", "DPR": "-1"})) == (640, 427)
    # The same URL without hints again: still the source's size (no mix-up in the caches).
    assert size(get(d, path)) == (640, 427)
    # Switched off (the default): hints change nothing and no Accept-CH is sent.
    e = make_daemon()
    upload(e, "chx", **{"r.jpg": PHOTO.read_bytes()})
    off = get(e, path, headers={"Sec-CH-Width": "400", "Sec-CH-DPR": "2"})
    assert size(off) == (640, 427) and "accept-ch" not in off.headers
    assert "DPR" not in off.headers.get("vary", "")


# -- Cache-Control and validators -------------------------------------------------------------


def test_immutable_for_cachebusters_or_everything(make_daemon):
    d = make_daemon()
    upload(d, "ccx", **{"r.jpg": PHOTO.read_bytes()})
    plain = get(d, "/unsafe/w:50/plain/s3://ccx/r.jpg")
    assert plain.headers["cache-control"] == "max-age=31536000, public"
    busted = get(d, "/unsafe/w:50/cb:v2/plain/s3://ccx/r.jpg")
    assert busted.headers["cache-control"] == "max-age=31536000, public, immutable"
    e = make_daemon(images_config='immutable = true\nttl = "1d"\n')
    upload(e, "ccx", **{"r.jpg": PHOTO.read_bytes()})
    for _ in range(2):  # a miss, then the cache's fast path
        r = get(e, "/unsafe/w:50/plain/s3://ccx/r.jpg")
        assert r.headers["cache-control"] == "max-age=86400, public, immutable"


def test_etag_and_last_modified_switches(make_daemon):
    d = make_daemon()
    upload(d, "val", **{"r.jpg": PHOTO.read_bytes()})
    path = "/unsafe/w:50/plain/s3://val/r.jpg"
    first = get(d, path)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for _ in range(2):  # the full path, then the fast path
        assert get(d, path, headers={"If-None-Match": etag}).status_code == 304
        r = get(d, path, headers={"If-Modified-Since": modified})
        assert r.status_code == 304 and r.headers["last-modified"] == modified
        earlier = formatdate(time.time() - 30 * 86400, usegmt=True)
        assert get(d, path, headers={"If-Modified-Since": earlier}).status_code == 200
    e = make_daemon(images_config="use_etag = false\nuse_last_modified = false\n")
    upload(e, "val", **{"r.jpg": PHOTO.read_bytes()})
    for _ in range(2):
        r = get(e, path, headers={"If-None-Match": etag, "If-Modified-Since": modified})
        assert r.status_code == 200
        assert "etag" not in r.headers and "last-modified" not in r.headers


# -- watermarks ---------------------------------------------------------------------------------


def png(size: tuple[int, int], colour: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA" if len(colour) == 4 else "RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def marked(d, options: str, bucket: str = "wmk") -> Image.Image:
    r = get(d, f"/unsafe/{options}/plain/s3://{bucket}/white.png@png")
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content)).convert("RGB")


def red_box(img: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), inclusive, of the watermark's red pixels."""
    mask = img.point(lambda v: 255 if v < 128 else 0).split()[1]  # green channel low: red
    box = mask.getbbox()
    return None if box is None else (box[0], box[1], box[2] - 1, box[3] - 1)


def test_watermark_positions_tiles_scale_and_opacity_by_pixels(make_daemon, tmp_path):
    mark = tmp_path / "mark.png"
    mark.write_bytes(png((40, 20), (255, 0, 0)))
    d = make_daemon(images_config=f"[images.watermark]\npath = {str(mark)!r}\n")
    upload(d, "wmk", **{"white.png": png((200, 100), (255, 255, 255))})
    assert red_box(marked(d, "w:200")) is None, "no wm option: no watermark"
    # Every compass position, as imgproxy's calcPosition puts a 40×20 mark on 200×100.
    for pos, box in {
        "ce": (80, 40, 119, 59), "no": (80, 0, 119, 19), "so": (80, 80, 119, 99),
        "ea": (160, 40, 199, 59), "we": (0, 40, 39, 59), "nowe": (0, 0, 39, 19),
        "noea": (160, 0, 199, 19), "sowe": (0, 80, 39, 99), "soea": (160, 80, 199, 99),
    }.items():
        assert red_box(marked(d, f"wm:1:{pos}")) == box, pos
    # Offsets move it inward, times the dpr (w:100 at dpr 2 is 200 px wide).
    assert red_box(marked(d, "w:100/dpr:2/wm:1:soea:10:5")) == (140, 70, 179, 89)
    # Tiled with 40×20 spacing: 80×40 tiles, the mark at (20, 10) in each.
    tiled = marked(d, "wm:1:re:40:20")
    red = lambda xy: tiled.getpixel(xy)[1] < 128  # noqa: E731
    for xy in [(20, 10), (59, 29), (100, 50), (180, 90), (20, 90)]:
        assert red(xy), xy
    for xy in [(10, 5), (60, 10), (70, 35), (199, 35)]:
        assert not red(xy), xy
    # Scale 0.5: fitted into 100×50 of the result.
    assert red_box(marked(d, "wm:1:ce:0:0:0.5")) == (50, 26, 149, 75)
    # Half opacity: half red over white.
    r, g, b = marked(d, "wm:0.5:ce").getpixel((100, 50))
    assert r == 255 and 120 <= g <= 136 and 120 <= b <= 136, (r, g, b)


def test_a_new_watermark_renders_its_variants_again(make_daemon, tmp_path):
    # The watermark is part of the cache key: a cached red mark must not outlive the config.
    mark = tmp_path / "mark.png"
    mark.write_bytes(png((40, 20), (255, 0, 0)))
    d = make_daemon(images_config=f"[images.watermark]\npath = {str(mark)!r}\n")
    upload(d, "wmk", **{"white.png": png((200, 100), (255, 255, 255))})
    assert marked(d, "wm:1:ce").getpixel((100, 50)) == (255, 0, 0)
    assert get(d, "/unsafe/w:50/plain/s3://wmk/white.png@png").headers["x-cache"] == "MISS"
    hit = get(d, "/unsafe/wm:1:ce/plain/s3://wmk/white.png@png")
    assert hit.headers["x-cache"] == "HIT"
    d.stop()
    mark.write_bytes(png((40, 20), (0, 0, 255)))
    d.restart()
    assert marked(d, "wm:1:ce").getpixel((100, 50)) == (0, 0, 255)
    # Variants without a watermark keep their entries.
    assert get(d, "/unsafe/w:50/plain/s3://wmk/white.png@png").headers["x-cache"] == "HIT"


def test_watermark_from_imgproxy_env_data_and_from_a_url(make_daemon, monkeypatch):
    import base64
    import http.server
    import threading

    monkeypatch.setenv("IMGPROXY_WATERMARK_DATA",
                       base64.b64encode(png((40, 20), (255, 0, 0))).decode())
    monkeypatch.setenv("IMGPROXY_WATERMARK_OPACITY", "0.5")
    d = make_daemon()
    upload(d, "wmk", **{"white.png": png((200, 100), (255, 255, 255))})
    r, g, _ = marked(d, "wm:1:ce").getpixel((100, 50))
    assert r == 255 and 120 <= g <= 136, "the environment's opacity applies"
    monkeypatch.delenv("IMGPROXY_WATERMARK_DATA")
    monkeypatch.delenv("IMGPROXY_WATERMARK_OPACITY")

    body = png((40, 20), (0, 0, 255, 255))
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/logo.png"
        e = make_daemon(images_config=f'[images.watermark]\nurl = "{url}"\n')
        upload(e, "wmk", **{"white.png": png((200, 100), (255, 255, 255))})
        for opts in ("wm:1:ce", "w:150/wm:1:ce", "w:120/wm:1:ce"):
            img = marked(e, opts)
            assert img.getpixel((img.width // 2, img.height // 2)) == (0, 0, 255), opts
        assert hits == ["/logo.png"], "downloaded once, on first use"
    finally:
        server.shutdown()


# -- /info ------------------------------------------------------------------------------------


PHOTOS = sorted(f for f in IMAGES.iterdir()
                if not f.name.startswith("edge-") and f.suffix in (".jpg", ".png", ".webp", ".avif"))


def test_info_describes_every_photograph_signed_and_cached(make_daemon):
    import base64

    from PIL import ImageOps

    from test_images import KEY_HEX, SALT_HEX, sign

    d = make_daemon(images_config=f'key = "{KEY_HEX}"\nsalt = "{SALT_HEX}"\n')
    upload(d, "info", **{f.name: f.read_bytes() for f in PHOTOS + [GIF, IMAGES / "edge-orientation6-shows-1920x1280.jpg"]})
    formats = {".jpg": "jpeg", ".png": "png", ".webp": "webp", ".avif": "avif", ".gif": "gif"}
    for f in PHOTOS + [GIF, IMAGES / "edge-orientation6-shows-1920x1280.jpg"]:
        path = f"/plain/s3://info/{f.name}"
        r = get(d, f"/info/{sign(path)}{path}")
        assert r.status_code == 200, (f.name, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-cache"] == "MISS"
        info = r.json()
        if f.suffix != ".avif":  # Pillow here has no AVIF decoder
            shown = ImageOps.exif_transpose(Image.open(f))
            assert (info["width"], info["height"]) == shown.size, f.name
        assert info["format"] == formats[f.suffix], f.name
        assert info["bytes"] == f.stat().st_size
        assert info["frames"] == (8 if f == GIF else 1)
        assert len(info["dominant_color"]) == 7 and info["dominant_color"][0] == "#"
        assert 5 <= len(base64.b64decode(info["thumbhash"])) <= 25, "a ThumbHash is 5-25 bytes"
        # The placeholder decodes, with the image's shape.
        head, data = info["placeholder"].split(",", 1)
        assert head == "data:image/png;base64"
        ph = Image.open(io.BytesIO(base64.b64decode(data)))
        assert ph.format == "PNG" and max(ph.size) <= 32
        ratio, ph_ratio = info["width"] / info["height"], ph.size[0] / ph.size[1]
        assert abs(ratio - ph_ratio) / ratio < 0.25, (f.name, ratio, ph.size)
        again = get(d, f"/info/{sign(path)}{path}")
        assert again.headers["x-cache"] == "HIT" and again.json() == info
        assert get(d, f"/info/{sign(path)}{path}",
                   headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    turned = get(d, "/info/{}/plain/s3://info/edge-orientation6-shows-1920x1280.jpg".format(
        sign("/plain/s3://info/edge-orientation6-shows-1920x1280.jpg"))).json()
    assert (turned["width"], turned["height"], turned["orientation"]) == (1920, 1280, 6)
    # The dominant colour of a flat image is its colour.
    upload(d, "flat", **{"teal.png": png((64, 32), (0, 128, 128))})
    path = "/plain/s3://flat/teal.png"
    assert get(d, f"/info/{sign(path)}{path}").json()["dominant_color"] == "#008080"
    # Signed like any image URL; a bad source is the same error as for an image.
    assert get(d, f"/info/unsafe{path}").status_code == 403
    assert get(d, f"/info/AAAA{path}").status_code == 403
    missing = "/plain/s3://flat/nope.png"
    assert get(d, f"/info/{sign(missing)}{missing}").status_code == 404
    upload(d, "junk", **{"bomb.png": (IMAGES / "edge-bomb-40000x40000.png").read_bytes()})
    bomb = "/plain/s3://junk/bomb.png"
    assert get(d, f"/info/{sign(bomb)}{bomb}").status_code == 422


def test_the_builder_carries_the_placeholder(make_daemon):
    d = make_daemon()
    upload(d, "build", **{"r.jpg": PHOTO.read_bytes(), "notes.txt": b"not an image",
                          "my photo+1.jpg": PHOTO.read_bytes()})
    admin = {"Authorization": "Bearer " + (d.data_dir / "admin-token").read_text().strip()}
    r = requests.post(d.admin_url + "/api/sign", headers=admin, timeout=30,
                      json={"bucket": "build", "key": "r.jpg", "width": 300})
    assert r.status_code == 200, r.text
    body = r.json()
    ph = body["placeholder"]
    assert ph["data_url"].startswith("data:image/png;base64,")
    assert f'style="background:{ph["dominant_color"]} url({ph["data_url"]})' in body["img"]
    # The info URL it names answers the same placeholder.
    info = requests.get(body["info_url"], timeout=30).json()
    assert info["placeholder"] == ph["data_url"] and (info["width"], info["height"]) == (640, 427)
    # A key that the URL percent-encodes has its placeholder too (the decoded key is read).
    spaced = requests.post(d.admin_url + "/api/sign", headers=admin, timeout=30,
                           json={"bucket": "build", "key": "my photo+1.jpg"}).json()
    assert spaced["placeholder"] == ph, "same photo, same placeholder"
    # A source that cannot be described gets a snippet without one, not an error.
    r = requests.post(d.admin_url + "/api/sign", headers=admin, timeout=30,
                      json={"bucket": "build", "key": "notes.txt", "width": 300})
    assert r.status_code == 200 and r.json()["placeholder"] is None
    assert "style=" not in r.json()["img"]


# -- JPEG XL sources ----------------------------------------------------------------------------


def cjxl(src, dst, *args: str) -> bytes:
    import shutil
    import subprocess

    assert shutil.which("cjxl"), "cjxl missing: scripts/setup-test-deps.sh installs libjxl-tools"
    subprocess.run(["cjxl", str(src), str(dst), *args], check=True, capture_output=True)
    return dst.read_bytes()


def test_jpeg_xl_sources_decode_like_what_they_were_made_from(make_daemon, tmp_path):
    # Before: a JPEG XL source was a 422 "JPEG XL is not supported yet".
    from test_images import psnr

    rocket, alpha, coffee = PHOTO, IMAGES / "edge-alpha-400.png", IMAGES / "coffee-600x400.png"
    samples = {
        # cjxl's default for a JPEG: its DCT coefficients kept (lossless recompression).
        "rocket.jxl": cjxl(rocket, tmp_path / "rocket.jxl"),
        # Lossy (XYB, distance 1: visually lossless) from a PNG.
        "coffee.jxl": cjxl(coffee, tmp_path / "coffee.jxl", "-d", "1"),
        # Lossless with alpha.
        "alpha.jxl": cjxl(alpha, tmp_path / "alpha.jxl", "-d", "0"),
    }
    d = make_daemon()
    upload(d, "jxl", **samples, **{f.name: f.read_bytes() for f in (rocket, alpha, coffee)})
    # rocket: 39.4 dB measured (mozjpeg's and jxl-oxide's IDCT and chroma upsampling differ).
    for name, source, min_psnr in (("rocket.jxl", rocket, 37.0), ("coffee.jxl", coffee, 32.0),
                                   ("alpha.jxl", alpha, float("inf"))):
        r = get(d, f"/unsafe/plain/s3://jxl/{name}@png")
        assert r.status_code == 200, (name, r.text)
        out = Image.open(io.BytesIO(r.content))
        # The original through the same pipeline (its ICC profile converted to sRGB alike).
        ref = Image.open(io.BytesIO(get(d, f"/unsafe/plain/s3://jxl/{source.name}@png").content))
        assert out.size == ref.size, name
        if min_psnr == float("inf"):
            assert out.convert("RGBA").tobytes() == ref.convert("RGBA").tobytes(), name
        else:
            assert psnr(out, ref) >= min_psnr, (name, psnr(out, ref))
    # Resized, and the source's own format cannot be written: JPEG (PNG with alpha).
    r = get(d, "/unsafe/w:320/plain/s3://jxl/rocket.jxl", headers={"Accept": "*/*"})
    assert r.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(r.content)).size == (320, 214)
    r = get(d, "/unsafe/w:100/plain/s3://jxl/alpha.jxl", headers={"Accept": "*/*"})
    assert r.headers["content-type"] == "image/png"
    info = get(d, "/info/unsafe/plain/s3://jxl/rocket.jxl").json()
    assert (info["format"], info["width"], info["height"]) == ("jxl", 640, 427)
    # A truncated file is a clear 422, never a crash.
    upload(d, "jxl2", **{"cut.jxl": samples["rocket.jxl"][:len(samples["rocket.jxl"]) // 3]})
    cut = get(d, "/unsafe/plain/s3://jxl2/cut.jxl@png")
    assert cut.status_code == 422, cut.text
    assert "JPEG XL" in cut.json()["message"], cut.text


def test_cache_control_passthrough_uses_the_objects_own(make_daemon):
    # Before: `cache_control_passthrough` did not exist; every answer had Pixelport's max-age.
    d = make_daemon(images_config="cache_control_passthrough = true\n")
    s3 = d.client()
    s3.create_bucket(Bucket="ccp")
    s3.put_object(Bucket="ccp", Key="own.jpg", Body=PHOTO.read_bytes(),
                  CacheControl="public, max-age=600, stale-while-revalidate=60")
    s3.put_object(Bucket="ccp", Key="none.jpg", Body=PHOTO.read_bytes())
    for _ in range(3):  # a miss, a hit, then the fast path
        own = get(d, "/unsafe/w:50/plain/s3://ccp/own.jpg")
        assert own.headers["cache-control"] == "public, max-age=600, stale-while-revalidate=60"
        raw = get(d, "/unsafe/raw:1/plain/s3://ccp/own.jpg")
        assert raw.headers["cache-control"] == "public, max-age=600, stale-while-revalidate=60"
    # An object without one gets Pixelport's.
    assert get(d, "/unsafe/w:50/plain/s3://ccp/none.jpg").headers["cache-control"] == \
        "max-age=31536000, public"
    # Off (the default): Pixelport's, whatever the object says.
    e = make_daemon()
    s3 = e.client()
    s3.create_bucket(Bucket="ccp")
    s3.put_object(Bucket="ccp", Key="own.jpg", Body=PHOTO.read_bytes(), CacheControl="no-store")
    assert get(e, "/unsafe/w:50/plain/s3://ccp/own.jpg").headers["cache-control"] == \
        "max-age=31536000, public"


# -- HEIC sources ---------------------------------------------------------------------------


def heif_enc(src, dst, *args: str) -> bytes:
    import shutil
    import subprocess

    assert shutil.which("heif-enc"), "heif-enc missing: scripts/setup-test-deps.sh installs libheif-examples"
    subprocess.run(["heif-enc", *args, str(src), "-o", str(dst)], check=True, capture_output=True)
    return dst.read_bytes()


def test_heic_sources_decode_like_what_they_were_made_from(make_daemon, tmp_path):
    # Before: a HEIC source was a 422 "HEIC is not supported yet".
    from test_images import psnr

    rocket, alpha = PHOTO, IMAGES / "edge-alpha-400.png"
    samples = {
        "rocket.heic": heif_enc(rocket, tmp_path / "rocket.heic", "-q", "90"),
        "alpha.heic": heif_enc(alpha, tmp_path / "alpha.heic", "-q", "95"),
    }
    d = make_daemon()
    upload(d, "heic", **samples, **{f.name: f.read_bytes() for f in (rocket, alpha)})
    # Against the originals through the same pipeline: 30.5 dB (rocket, q90) and 51.0 dB
    # (alpha, q95) measured; against libheif's own heif-convert: 57.6 dB and identical.
    for name, source, min_psnr in (("rocket.heic", rocket, 29.0), ("alpha.heic", alpha, 45.0)):
        r = get(d, f"/unsafe/plain/s3://heic/{name}@png")
        assert r.status_code == 200, (name, r.text)
        out = Image.open(io.BytesIO(r.content))
        ref = Image.open(io.BytesIO(get(d, f"/unsafe/plain/s3://heic/{source.name}@png").content))
        assert out.size == ref.size, name
        assert out.mode == ref.mode, name
        assert psnr(out, ref) >= min_psnr, (name, psnr(out, ref))
        # libheif's own tool decodes the same file to the same picture.
        import subprocess
        subprocess.run(["heif-convert", str(tmp_path / name), str(tmp_path / f"{name}.png")],
                       check=True, capture_output=True)
        own = Image.open(tmp_path / f"{name}.png")
        if own.info.get("icc_profile"):
            # heif-convert keeps the source's profile; Pixelport converts to sRGB.
            from PIL import ImageCms
            icc = ImageCms.ImageCmsProfile(io.BytesIO(own.info["icc_profile"]))
            mode = own.mode
            own = ImageCms.profileToProfile(own.convert("RGB"), icc, ImageCms.createProfile("sRGB"))
            assert mode == "RGB", "a profile on an alpha sample is not expected here"
        assert psnr(out, own) >= 40.0, (name, psnr(out, own))
    # Transparency survives: the corners of the alpha sample stay transparent.
    a = Image.open(io.BytesIO(get(d, "/unsafe/plain/s3://heic/alpha.heic@png").content))
    b = Image.open(io.BytesIO(get(d, f"/unsafe/plain/s3://heic/{alpha.name}@png").content))
    assert abs(a.getpixel((0, 0))[3] - b.getpixel((0, 0))[3]) <= 8
    r = get(d, "/unsafe/w:320/plain/s3://heic/rocket.heic", headers={"Accept": "*/*"})
    assert r.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(r.content)).size == (320, 214)
    info = get(d, "/info/unsafe/plain/s3://heic/rocket.heic").json()
    assert (info["format"], info["width"], info["height"]) == ("heic", 640, 427), info
    # A truncated file is a clear 422, never a crash.
    upload(d, "heic2", **{"cut.heic": samples["rocket.heic"][:len(samples["rocket.heic"]) // 3]})
    cut = get(d, "/unsafe/plain/s3://heic2/cut.heic@png")
    assert cut.status_code == 422, cut.text
    assert "HEIC" in cut.json()["message"], cut.text
    assert get(d, "/unsafe/w:10/plain/s3://heic/rocket.heic@png").status_code == 200
