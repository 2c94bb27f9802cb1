"""DICOMweb over TLS against a real Orthanc: CA-bundle verification and client certificates."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.config import DicomwebConfig
from appliance.errors import SyncError
from appliance.store.store import Store
from appliance.sync.dicomweb import DicomwebClient
from appliance.sync.engine import Syncer

from store.helpers import add_study, make_config
from sync.faulty_proxy import FaultyProxy
from sync.orthanc import PASSWORD, USER, OrthancServer, available

pytestmark = pytest.mark.orthanc


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _cert(subject, key, issuer, issuer_key, *, ca=False, san=None, usage=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory):
    import os

    reason = available()
    if reason:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("tls")
    ca_key = _key()
    ca = _cert("test clinic CA", ca_key, "test clinic CA", ca_key, ca=True)
    server_key = _key()
    server = _cert("127.0.0.1", server_key, "test clinic CA", ca_key,
                   san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client_key = _key()
    client = _cert("station-1", client_key, "test clinic CA", ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    (work / "ca.pem").write_bytes(pem(ca))
    (work / "server.pem").write_bytes(pem(server) + _pem_key(server_key))
    (work / "client.pem").write_bytes(pem(client))
    (work / "client.key").write_bytes(_pem_key(client_key))
    other_key = _key()
    other_ca = _cert("someone else", other_key, "someone else", other_key, ca=True)
    (work / "other-ca.pem").write_bytes(pem(other_ca))
    # Debian's Orthanc 1.10.1 dies (SIGSEGV) on the first HTTPS request here, so TLS is terminated
    # by a Python ssl listener on loopback that requires a client certificate from the clinic CA
    # and forwards plain HTTP to Orthanc: the client side under test is the same.
    orthanc = OrthancServer(work / "orthanc")
    orthanc.start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(work / "server.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(str(work / "ca.pem"))
    proxy = FaultyProxy(orthanc.port, seed=0, weights={"forward": 1.0}, ssl_context=context)
    yield orthanc, proxy, work
    proxy.close()
    orthanc.stop()


def test_tls_with_ca_bundle_and_client_certificate(tmp_path, tls_orthanc):
    orthanc, proxy, work = tls_orthanc
    url = f"https://127.0.0.1:{proxy.port}/dicom-web"
    good = dict(url=url, user=USER, password=PASSWORD, ca=str(work / "ca.pem"), cert=str(work / "client.pem"),
                key=str(work / "client.key"), timeout_s=10.0)
    assert DicomwebClient(DicomwebConfig(**good)).reachable()
    # A server certificate from a CA we were not told to trust is refused.
    with pytest.raises(SyncError, match="TLS"):
        DicomwebClient(DicomwebConfig(**{**good, "ca": str(work / "other-ca.pem")})).instance_exists("1.2", "1.2", "1.2")
    # Without the client certificate the server refuses the handshake: an answer, not an outage,
    # so the scheduler's probe lets the pass run and record the refusal.
    no_cert = DicomwebClient(DicomwebConfig(**{**good, "cert": "", "key": ""}))
    assert no_cert.reachable()
    with pytest.raises(SyncError, match="TLS"):
        no_cert.instance_exists("1.2", "1.2", "1.2")
    config = make_config(tmp_path / "data", url, dicomweb=good)
    with Store(config) as store:
        add_study(store, 1)
        report = Syncer(store, config).run_pass()
        assert report.delivered == 3 and report.remaining == 0
    assert proxy.counts.get("tls_refused", 0) >= 2  # the untrusted server and the missing client cert
