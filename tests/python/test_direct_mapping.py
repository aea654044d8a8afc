"""The remote store beside an existing MinIO, its buckets as they are
(`[store] bucket_mapping = "direct"`): Pixelport bucket B is cluster bucket B.

Before this, the remote store kept every Pixelport bucket inside one cluster bucket under a
prefix, so a MinIO already holding `images/product.jpg` could not serve the seed's URL
`/unsafe/resize:300:200/plain/s3://images/product.jpg` through Pixelport without copying
everything first. The cluster here is a real second S3 server process (s3s-fs), and the
pre-existing bucket is written to it directly with boto3, never through Pixelport.
"""

from __future__ import annotations

import io
import time

import pytest
import requests
from botocore.exceptions import ClientError
from PIL import Image

import harness

pytestmark = pytest.mark.pixelport_only

PHOTO = harness.REPO_ROOT.parent / "shared" / "images" / "rocket-640x427.jpg"


@pytest.fixture
def direct(tmp_path):
    d = harness.Daemon(tmp_path / "d", backend="remote",
                       extra_config='bucket_mapping = "direct"\n'
                                    '[cache]\nsource_revalidate = "1s"\n')
    (d.cluster_root / harness.CLUSTER_BUCKET).mkdir(parents=True, exist_ok=True)
    d.cluster = harness.S3sFs(d.cluster_root, d.base, harness.CLUSTER_ACCESS_KEY,
                              harness.CLUSTER_SECRET_KEY, name="cluster-s3s-fs").start()
    cluster = d.cluster_client()
    cluster.create_bucket(Bucket="images")
    cluster.put_object(Bucket="images", Key="product.jpg", Body=PHOTO.read_bytes(),
                       ContentType="image/jpeg")
    d.start()
    yield d, cluster
    d.stop_all()


def test_existing_cluster_bucket_is_served_as_it_is(direct):
    """`aws s3 ls` through Pixelport lists the cluster's own bucket and its object, and the
    seed's sample URL answers from it (as resize:fit:300:200: imgproxy, too, reads `resize:300:200` as the
    resizing type `300` and refuses it) with the right size and format."""
    d, _ = direct
    aws = harness.AwsCli(d.endpoint)
    assert "images" in aws("s3", "ls").stdout.split()
    listing = aws("s3", "ls", "s3://images/").stdout
    assert "product.jpg" in listing and str(PHOTO.stat().st_size) in listing, listing
    r = requests.get(f"{d.images_url}/unsafe/resize:fit:300:200/plain/s3://images/product.jpg",
                     timeout=60)
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(r.content)) as im:
        # 640x427 fitted into 300x200: 300 wide.
        assert im.format == "JPEG" and im.size[0] == 300 and im.size[1] <= 200, im.size
    r = requests.get(f"{d.images_url}/unsafe/rs:fit:100:100/plain/s3://images/product.jpg@webp",
                     timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"


def test_buckets_and_objects_written_through_pixelport_are_the_clusters_own(direct):
    """A bucket created through Pixelport is a cluster bucket; its objects keep their keys;
    a non-empty bucket is refused deletion as S3 refuses it; a change made on the cluster
    directly is seen after source_revalidate."""
    d, cluster = direct
    c = d.client()
    c.create_bucket(Bucket="fresh")
    cluster.head_bucket(Bucket="fresh")
    c.put_object(Bucket="fresh", Key="a/b.txt", Body=b"hello")
    assert cluster.get_object(Bucket="fresh", Key="a/b.txt")["Body"].read() == b"hello"
    with pytest.raises(ClientError) as e:
        c.create_bucket(Bucket="fresh")
    assert e.value.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
    with pytest.raises(ClientError) as e:
        c.delete_bucket(Bucket="fresh")
    assert e.value.response["Error"]["Code"] == "BucketNotEmpty"
    c.delete_object(Bucket="fresh", Key="a/b.txt")
    c.delete_bucket(Bucket="fresh")
    with pytest.raises(ClientError):
        cluster.head_bucket(Bucket="fresh")
    with pytest.raises(ClientError) as e:
        c.head_bucket(Bucket="fresh")
    assert e.value.response["Error"]["Code"] in ("404", "NoSuchBucket")

    url = f"{d.images_url}/unsafe/rs:fit:64:64/plain/s3://images/product.jpg@png"
    first = requests.get(url, timeout=60)
    assert first.status_code == 200
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(png, "PNG")
    cluster.put_object(Bucket="images", Key="product.jpg", Body=png.getvalue())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        again = requests.get(url, timeout=60)
        if again.content != first.content:
            break
        time.sleep(0.3)
    with Image.open(io.BytesIO(again.content)) as im:
        assert im.size == (32, 32), "the cluster's new object was never seen"
