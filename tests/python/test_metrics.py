"""`GET /metrics` on the admin listener, scraped and parsed with the Prometheus text
parser, checked against the traffic the test itself sent to a fresh daemon."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import harness

pytestmark = pytest.mark.pixelport_only

IMAGES = harness.REPO_ROOT.parent / "shared" / "images"


def scrape(d) -> dict:
    r = requests.get(f"{d.admin_url}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_count_the_traffic(make_daemon):
    d = make_daemon(images_config="workers = 2\n")
    s3 = d.client()
    s3.create_bucket(Bucket="met")
    body = (IMAGES / "rocket-640x427.jpg").read_bytes()
    for i in range(3):
        s3.put_object(Bucket="met", Key=f"r{i}.jpg", Body=body)
    s3.get_object(Bucket="met", Key="r0.jpg")["Body"].read()
    ok = [requests.get(f"{d.images_url}/unsafe/w:{40 + i}/plain/s3://met/r0.jpg", timeout=30) for i in range(4)]
    assert all(r.status_code == 200 for r in ok)
    bad = requests.get(f"{d.images_url}/unsafe/nonsense:1/plain/s3://met/r0.jpg", timeout=30)
    missing = requests.get(f"{d.images_url}/unsafe/w:10/plain/s3://met/none.jpg", timeout=30)
    assert (bad.status_code, missing.status_code) == (404, 404)

    m = scrape(d)
    assert m[("imgproxy_requests_total", ())] == 6
    assert m[("imgproxy_status_codes_total", (("status", "200"),))] == 4
    assert m[("imgproxy_status_codes_total", (("status", "404"),))] == 2
    assert m[("imgproxy_errors_total", (("type", "invalid_url"),))] == 1
    assert m[("imgproxy_errors_total", (("type", "source_not_found"),))] == 1
    assert m[("imgproxy_request_duration_seconds_count", ())] == 6
    assert m[("imgproxy_requests_in_progress", ())] == 0
    assert m[("imgproxy_images_in_progress", ())] == 0
    assert m[("imgproxy_workers", ())] == 2
    assert m[("pixelport_s3_requests_total", (("op", "PutObject"), ("status", "200")))] == 3
    assert m[("pixelport_s3_requests_total", (("op", "CreateBucket"), ("status", "200")))] == 1
    assert m[("pixelport_s3_requests_total", (("op", "GetObject"), ("status", "200")))] == 1
    assert m[("pixelport_s3_request_duration_seconds_count", (("op", "PutObject"),))] == 3
    assert m[("pixelport_store_objects", ())] == 3
    assert m[("pixelport_store_bytes", ())] == 3 * len(body)
