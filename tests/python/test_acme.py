"""The edge's certificate from ACME, end to end against a real ACME server: Debian's
`pebble` (installed by scripts/setup-test-deps.sh), validating by HTTP-01 on the edge's plain
HTTP listener and by TLS-ALPN-01 on its HTTPS listener.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import requests

import harness
from tunnel_harness import IMAGES_HOST, Edge, served_cert, wait_until

# No skip when pebble is missing: scripts/setup-test-deps.sh installs it, and an ACME test
# that quietly skips in CI would guard nothing.
pytestmark = pytest.mark.pixelport_only


def ca_signed_cert(base):
    """A throwaway CA and a certificate it signed for localhost / 127.0.0.1 (rustls, as
    browsers do, will not take a self-signed server certificate as its own root)."""
    ca, ca_key = base / "ca.pem", base / "ca-key.pem"
    cert, key, csr = base / "pebble-cert.pem", base / "pebble-key.pem", base / "pebble.csr"
    ext = base / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=test CA",
        "-keyout", str(ca_key), "-out", str(ca))
    run("openssl", "req", *ec, "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key


class Pebble:
    def __init__(self, base, http_port: int, tls_port: int):
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.ca, self.cert, self.key = ca_signed_cert(base)
        self.port = harness.free_port()
        self.mgmt = harness.free_port()
        cfg = base / "pebble.json"
        cfg.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt}",
            "certificate": str(self.cert), "privateKey": str(self.key),
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        self.log = open(base / "pebble.log", "wb")
        self.proc = subprocess.Popen(["pebble", "-config", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        wait_until(lambda: requests.get(self.directory, verify=str(self.ca), timeout=2).ok,
                   20, what="pebble up")

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root(self, path) -> str:
        """Pebble's issuing root (made fresh at each start), as a PEM file."""
        pem = requests.get(f"https://127.0.0.1:{self.mgmt}/roots/0", verify=str(self.ca),
                           timeout=5).text
        path.write_text(pem)
        return str(path)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.log.close()


def acme_table(pebble, challenge: str, renew_before: str) -> str:
    return f"""
[edge.acme]
directory = "{pebble.directory}"
directory_ca = "{pebble.ca}"
hostnames = ["{IMAGES_HOST}"]
challenge = "{challenge}"
renew_before = "{renew_before}"
check_interval = "1s"
"""


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_issued_at_first_start_kept_across_restarts_and_renewed(tmp_path, challenge):
    edge = Edge(tmp_path / "edge", acme="")
    pebble = Pebble(tmp_path / "pebble", edge.http_port, edge.https_port)
    try:
        edge.acme = acme_table(pebble, challenge, "1d")
        edge.start()
        wait_until(lambda: "ACME: certificate issued" in edge.logs(), 30,
                   what="the first certificate")
        root = pebble.root(tmp_path / "pebble-root.pem")
        # A client trusting pebble's root reaches the edge by name over verified HTTPS.
        r = requests.get(edge.url(IMAGES_HOST, "/x"), verify=root, timeout=10)
        assert r.status_code in (421, 503), r.text
        first = served_cert(edge)
        acme_dir = edge.data_dir / "acme"
        for f in ("account.json", "key.pem", "cert.pem"):
            assert oct(os.stat(acme_dir / f).st_mode & 0o777) == "0o600", f
        # Restarted, the edge serves the stored certificate: no new order.
        assert edge.stop() == 0
        edge.log_path.write_text("")
        edge.start()
        time.sleep(2.5)
        assert "ordering a certificate" not in edge.logs(), edge.logs()
        assert served_cert(edge)["serial"] == first["serial"]
        # Renewal: with renew_before longer than the certificate's life, it is due at once;
        # the edge orders again and serves the new certificate without a restart.
        assert edge.stop() == 0
        edge.acme = acme_table(pebble, challenge, "36500d")
        edge.start()
        wait_until(lambda: served_cert(edge)["serial"] != first["serial"], 30,
                   what="the renewed certificate served")
        assert "the certificate expires within renew_before" in edge.logs()
        r = requests.get(edge.url(IMAGES_HOST, "/x"), verify=root, timeout=10)
        assert r.status_code in (421, 503)
    finally:
        edge.stop()
        pebble.stop()
