"""Delivery over the network a rural clinic has: a slow uplink, redirects, wrong URLs and
credentials, odd answers. Each test puts a :class:`sync.scripted_server.ScriptedServer` (plain or
TLS) between the appliance and a real Orthanc and checks what reaches the server and what the
technician is told."""

from __future__ import annotations

import gzip
import io
import socket
import time

import pydicom
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from appliance.store.store import Store
from appliance.sync.dicomweb import DicomwebClient
from appliance.sync.engine import Syncer
from appliance.sync.scheduler import SyncScheduler
from appliance.ui.sync_panel import store_sync_status

from store.helpers import add_study, make_config
from sync.certs import make_ca, server_context
from sync.checks import check_server
from sync.faulty_proxy import FaultyProxy
from sync.orthanc import PASSWORD, USER
from sync.scripted_server import Reply, ScriptedServer

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(CA bundle, a server TLS context for 127.0.0.1 signed by that CA, another CA's bundle,
    a context with an expired certificate, one whose certificate names 127.0.0.2)."""
    work = tmp_path_factory.mktemp("certs")
    ca_path, ca_key, ca_cert = make_ca(work)
    return (ca_path, server_context(work, ca_key, ca_cert), make_ca(work, "someone else")[0],
            server_context(work, ca_key, ca_cert, expired=True), server_context(work, ca_key, ca_cert, ip="127.0.0.2"))


def _serve(orthanc, tls, scheme, answer=lambda request: None, **kw):
    server = ScriptedServer(answer, upstream_port=orthanc.port,
                            ssl_context=tls[1] if scheme == "https" else None, **kw)
    return server, f"{scheme}://127.0.0.1:{server.port}/dicom-web"


def _config(tmp_path, url, tls, **dicomweb):
    return make_config(tmp_path / "data", url,
                       dicomweb={"user": USER, "password": PASSWORD, "ca": str(tls[0]), **dicomweb})


class _SmallSendBuffer(HTTPAdapter):
    """A WAN-sized send buffer: on loopback Linux grows it to 4 MB, which takes a whole test
    photograph at once, so no send would ever wait on the link."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs["socket_options"] = [*HTTPConnection.default_socket_options,
                                    (socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)]
        super().init_poolmanager(*args, **kwargs)


def _slow_link_session() -> requests.Session:
    session = requests.Session()
    session.mount("http://", _SmallSendBuffer())
    session.mount("https://", _SmallSendBuffer())
    return session


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_slow_uplink_delivers_a_photograph_that_takes_longer_than_timeout_s(tmp_path, clean_orthanc, tls, scheme):
    """The server takes the 1.4 MB photograph at 200 kB/s (about 7 s) with timeout_s 3: the
    link keeps moving, so the upload must go on. A bytes body was one sendall() that the timeout
    bounded as a whole: a photograph that needs longer than timeout_s to go up timed out on
    every pass and never arrived."""
    server, url = _serve(clean_orthanc, tls, scheme, read_bytes_per_s=200_000)
    with server:
        config = _config(tmp_path, url, tls, timeout_s=3.0)
        with Store(config) as store:
            add_study(store, 1, h=600, w=800)
            client = DicomwebClient(config.dicomweb, session=_slow_link_session())
            report = Syncer(store, config, client=client).run_pass()
            assert report.errors == [] and report.delivered == 3
            outcome = check_server(store, clean_orthanc)
            assert (outcome.lost, outcome.duplicated, outcome.corrupt, outcome.undelivered) == (0, 0, 0, 0)
        uploads = [r for r in server.requests if r.method == "POST"]
        assert max(len(r.body) for r in uploads) > 1_400_000


@pytest.mark.parametrize("status", [307, 302])
def test_redirect_to_plain_http_is_not_followed(tmp_path, clean_orthanc, tls, status):
    """The https server (a reverse proxy moved, a load balancer misconfigured) redirects to plain
    http. requests followed it: a 307 sent the photograph, patient ID and all, in clear text; a 302
    turned the upload into a GET. Nothing may reach the http address; the item waits with an
    error that says what to change, and is delivered once the server stops redirecting."""
    sink = ScriptedServer(lambda request: Reply(200, b"[]", {"Content-Type": "application/dicom+json"}))
    redirecting = [True]

    def answer(request):
        if redirecting[0]:
            return Reply(status, headers={"Location": f"http://127.0.0.1:{sink.port}{request.path}"})
        return None

    server, url = _serve(clean_orthanc, tls, "https", answer)
    with server, sink:
        config = _config(tmp_path, url, tls)
        with Store(config) as store:
            add_study(store, 2)
            report = Syncer(store, config).run_pass()
            assert sink.requests == []
            assert report.delivered == 0 and report.remaining == 3
            status_now = store.sync_status()
            assert "redirected" in status_now.last_error and f"http://127.0.0.1:{sink.port}" in status_now.last_error
            assert "[dicomweb] url" in status_now.last_error
            redirecting[0] = False
            assert Syncer(store, config).run_pass(ignore_backoff=True).delivered == 3
            assert check_server(store, clean_orthanc).lost == 0
        assert sink.requests == []


@pytest.mark.parametrize("fault, words", [
    ("password", "refused the appliance's credentials"),
])
def test_a_server_that_answers_no_is_reported_not_taken_for_offline(tmp_path, clean_orthanc, tls, fault, words):
    """A wrong password or a server certificate outside the CA bundle: the scheduler's probe took
    either for "not reachable" and skipped the pass, so no item ever recorded why; the Sync page
    showed no error at all, the LEDs only "pending", and the station waited forever. The
    automatic pass must run, record the real reason once, and show it."""
    server, url = _serve(clean_orthanc, tls, "https")
    with server:
        wrong = {"password": "wrong"} if fault == "password" else {"ca": str(tls[2])}
        config = _config(tmp_path, url, tls, **wrong)
        with Store(config) as store:
            add_study(store, 3)
            scheduler = SyncScheduler(store, config)
            report = scheduler.run_once()  # the timer's pass, not a forced one
            assert report is not None and report.failed == 1 and report.remaining == 3
            assert [i.attempts for i in store.outbox()] == [1, 0, 0]  # the pass stopped at the first refusal
            indicator = scheduler.indicator()
            assert indicator.state == "error" and indicator.reachable
            page = store_sync_status(store, scheduler)()
            assert len(page["errors"]) == 1 and words in page["errors"][0], page
            right = _config(tmp_path, url, tls)
            assert SyncScheduler(store, right).run_once(force=True).delivered == 3
            assert check_server(store, clean_orthanc).lost == 0


@pytest.mark.parametrize("fault, detail", [
    ("untrusted", "unable to get local issuer certificate"),
    ("expired", "certificate has expired"),
    ("other host", "mismatch"),
])
def test_certificate_problems_are_named_as_such(tmp_path, clean_orthanc, tls, fault, detail):
    """A server certificate outside the CA bundle, expired, or for another address. The error
    carried requests' whole text, the URL with the study and instance UIDs in it, and the Sync
    page, which explains an error by words such as "401" or "500" in it, often read a UID's
    digits as a refused password. The technician must read "certificate" and the reason."""
    context = {"untrusted": tls[1], "expired": tls[3], "other host": tls[4]}[fault]
    ca = tls[2] if fault == "untrusted" else tls[0]
    server = ScriptedServer(lambda request: None, upstream_port=clean_orthanc.port, ssl_context=context)
    with server:
        config = _config(tmp_path, f"https://127.0.0.1:{server.port}/dicom-web", tls, ca=str(ca))
        with Store(config) as store:
            for seed in range(4):  # twelve 39-digit UIDs: some hold a 401, 403 or 50x
                add_study(store, seed)
            scheduler = SyncScheduler(store, config)
            report = scheduler.run_once()
            assert report is not None and report.failed == 1 and server.requests == []
            error = store.sync_status().last_error
            assert detail in error and "TLS" in error
            assert not any(uid in error for i in store.outbox() for uid in (i.study_uid, i.series_uid, i.sop_uid))
            page = store_sync_status(store, scheduler)()
            assert page["errors"][0].startswith("The clinic server's certificate is not trusted."), page
            assert scheduler.indicator().state == "error"


@pytest.mark.parametrize("url, words", [
    ("https://glanceseg-no-such-server.invalid/dicom-web", "does not resolve"),
    ("http://127.0.0.1:9/dicom-web", "connection refused"),
])
def test_unreachable_server_says_why(tmp_path, url, words):
    """A name that does not resolve and a refused connection: the error said only
    "ConnectionError", which neither told the two apart nor matched the Sync page's
    "cannot be reached" explanation (it showed "Sending failed")."""
    config = make_config(tmp_path / "data", url, dicomweb={"timeout_s": 2.0})
    _says_why(config, words)


def test_connection_dropped_mid_upload_says_so(tmp_path, clean_orthanc):
    """The link drops halfway through the photograph's upload: the error said "ConnectionError"."""
    proxy = FaultyProxy(clean_orthanc.port, seed=0, weights={"forward": 1e-9, "drop_upload": 1.0})  # queries pass
    try:
        config = make_config(tmp_path / "data", f"http://127.0.0.1:{proxy.port}/dicom-web",
                             dicomweb={"user": USER, "password": PASSWORD, "timeout_s": 5.0})
        _says_why(config, "the connection was dropped")
        assert proxy.counts["drop_upload"] == 1 and clean_orthanc.sop_uids() == []
    finally:
        proxy.close()


def _says_why(config, words):
    with Store(config) as store:
        add_study(store, 5)
        report = Syncer(store, config).run_pass()
        assert report.failed == 1 and report.remaining == 3
        error = store.sync_status().last_error
        assert words in error, error
        page = store_sync_status(store)()
        assert page["errors"][0].startswith("The clinic server cannot be reached."), page


@pytest.mark.parametrize("method, body", [
    ("GET", b'{"error": "upstream timeout"}'),  # a proxy's JSON error object with status 200
    ("GET", b'["1.2.3"]'),  # an Orthanc REST listing (the URL names Orthanc's root, not /dicom-web)
    ("POST", b'[{"ok": true}]'),
])
def test_json_of_another_shape_fails_the_item_not_the_pass(tmp_path, clean_orthanc, tls, method, body):
    """JSON that is not DICOM JSON raised AttributeError from the client: the pass crashed mid-item
    (``glanceseg sync --once`` with a traceback, the scheduler's pass logged as crashed), leaving
    the item 'sending' and no error on it. It must fail as malformed, with the pass going on."""
    server, url = _serve(clean_orthanc, tls, "http",
                         lambda request: Reply(200, body, {"Content-Type": "application/json"})
                         if request.method == method else None)
    with server:
        config = _config(tmp_path, url, tls)
        with Store(config) as store:
            add_study(store, 6)
            report = Syncer(store, config).run_pass()
            assert report.failed == 3 and report.remaining == 3
            assert {i.state for i in store.outbox()} == {"pending"}
            assert "not DICOM JSON" in store.sync_status().last_error


@pytest.mark.parametrize("root", ["", "/dicomweb"])
def test_wrong_dicomweb_root_stops_the_pass_and_says_so(tmp_path, clean_orthanc, root):
    """The URL names Orthanc's REST root (STOW-RS answers 405) or a misspelt root (404). Every item
    of every study was uploaded in full on every pass, each answered the same, and the Sync page
    said the appliance would "try again automatically". The pass must stop at the first item and
    the technician read that the address is wrong."""
    config = make_config(tmp_path / "data", clean_orthanc.rest + root, dicomweb={"user": USER, "password": PASSWORD})
    with Store(config) as store:
        add_study(store, 7)
        add_study(store, 8)
        scheduler = SyncScheduler(store, config)
        report = scheduler.run_once()
        assert report is not None and report.failed == 1 and report.remaining == 6
        assert [i.attempts for i in store.outbox()] == [1, 0, 0, 0, 0, 0]
        assert "[dicomweb] url" in store.sync_status().last_error
        page = store_sync_status(store, scheduler)()
        assert page["errors"][0].startswith("The appliance is set to the wrong address"), page
        right = make_config(tmp_path / "data", clean_orthanc.dicomweb, dicomweb={"user": USER, "password": PASSWORD})
        assert Syncer(store, right).run_pass(ignore_backoff=True).delivered == 6
        assert check_server(store, clean_orthanc).lost == 0


def test_upload_too_large_names_the_limit_and_the_small_items_still_go(tmp_path, clean_orthanc, tls):
    """A reverse proxy with a 1 MB upload limit (nginx's default) answers 413 to the photograph.
    The error said only "STOW-RS answered HTTP 413"; it must say what to raise, and the
    Segmentation and report, under the limit, are delivered in the same pass."""
    server, url = _serve(clean_orthanc, tls, "http", lambda request: Reply(413, b"<html>Too Large</html>", {
        "Content-Type": "text/html"}) if request.method == "POST" and len(request.body) > 1_000_000 else None)
    with server:
        config = _config(tmp_path, url, tls)
        with Store(config) as store:
            add_study(store, 9, h=600, w=800)
            report = Syncer(store, config).run_pass()
            assert report.delivered == 2 and report.failed == 1
            error = store.sync_status().last_error
            assert "413" in error and "too large" in error and "client_max_body_size" in error


def test_sync_page_says_the_server_cannot_be_reached_while_offline(tmp_path):
    """Offline (here: connection refused), the scheduler's probe fails and no item is tried, so the
    outbox held no error: the Sync page showed studies waiting and nothing about why, even after
    "Sync now". It must say the server cannot be reached, and why, without touching the items."""
    config = make_config(tmp_path / "data", "http://127.0.0.1:9/dicom-web", dicomweb={"probe_timeout_s": 2.0})
    with Store(config) as store:
        add_study(store, 10)
        scheduler = SyncScheduler(store, config)
        for force in (False, True):  # the timer's probe, then "Sync now"
            assert scheduler.run_once(force=force) is None
            page = store_sync_status(store, scheduler)()
            assert page["pending"] == 3 and len(page["errors"]) == 1, page
            assert page["errors"][0].startswith("The clinic server cannot be reached.")
            assert "connection refused" in page["errors"][0]
        assert scheduler.indicator().state == "error"  # after the press
        assert all(i.attempts == 0 and i.last_error is None for i in store.outbox())


def _stow_answer(sop_uid: str, *, failed: bool) -> bytes:
    """A STOW-RS answer naming ``sop_uid`` as stored, or as failed with 0xA700 (out of resources)."""
    import json

    ref = {"00081155": {"vr": "UI", "Value": [sop_uid]}}
    if failed:
        doc = {"00081198": {"vr": "SQ", "Value": [{**ref, "00081197": {"vr": "US", "Value": [0xA700]}}]}}
    else:
        doc = {"00081199": {"vr": "SQ", "Value": [ref]}}
    return json.dumps(doc).encode()


def test_an_instance_counts_as_delivered_only_when_the_server_lists_it(tmp_path, clean_orthanc, tls):
    """Behaviour that was already right, pinned down: a STOW-RS answer that names the instance in
    FailedSOPSequence (202), and one that claims it was stored (200) while nothing reached the
    server, both leave the item pending and its built file in place; the QIDO-RS read-back, not
    the STOW-RS answer, decides. A 200 with a WarningReason for an instance really stored counts."""
    mode = {"value": "failed"}

    def answer(request):
        if request.method != "POST" or mode["value"] == "forward":
            return None
        part = request.body.split(b"\r\n\r\n", 1)[1]
        sop = pydicom.dcmread(io.BytesIO(part[:part.rindex(b"\r\n--")])).SOPInstanceUID
        if mode["value"] == "warning":
            stored = server.forward(request)
            import json

            raw = stored.body
            doc = json.loads(gzip.decompress(raw) if stored.headers.get("Content-Encoding") == "gzip" else raw)
            doc["00081196"] = {"vr": "US", "Value": [0xB000]}  # WarningReason: coercion of data elements
            return Reply(200, json.dumps(doc).encode(), {"Content-Type": "application/dicom+json"})
        return Reply(202 if mode["value"] == "failed" else 200, _stow_answer(sop, failed=mode["value"] == "failed"),
                     {"Content-Type": "application/dicom+json"})

    server, url = _serve(clean_orthanc, tls, "http", answer)
    with server:
        config = _config(tmp_path, url, tls)
        with Store(config) as store:
            add_study(store, 11)
            for value, words in (("failed", "failure reason"), ("lying", "does not list")):
                mode["value"] = value
                report = Syncer(store, config).run_pass(ignore_backoff=True)
                assert report.delivered == 0 and report.failed == 3
                assert words in store.sync_status().last_error
                assert all(i.state == "pending" and store.path(i.path).exists() for i in store.outbox())
            assert clean_orthanc.sop_uids() == []
            mode["value"] = "warning"
            assert Syncer(store, config).run_pass(ignore_backoff=True).delivered == 3
            outcome = check_server(store, clean_orthanc)
            assert (outcome.lost, outcome.duplicated, outcome.corrupt, outcome.undelivered) == (0, 0, 0, 0)


def test_error_led_stays_lit_while_every_waiting_item_is_in_backoff(tmp_path, clean_orthanc):
    """A refused password: each timer pass tries the items whose backoff has run out. A pass that
    found none due cleared the error, so the error LED went dark (ready/pending instead) between
    attempts and lit again, with another beep, at the next one: the panel flickered between
    "fine" and "failed" while nothing could ever be sent."""
    import random

    hw = {"enabled": True, "pin_factory": "mock", "sync_button_pin": 17, "led_ready_pin": 5, "led_syncing_pin": 6,
          "led_pending_pin": 13, "led_error_pin": 19, "button_bounce_s": 0.0, "blink_s": 0.01}
    config = make_config(tmp_path / "data", clean_orthanc.dicomweb, hw=hw, sync={"backoff_base_s": 600.0},
                         dicomweb={"user": USER, "password": "wrong"})
    from appliance.sync.scheduler import attach_panel

    with Store(config) as store:
        add_study(store, 12)
        scheduler = attach_panel(SyncScheduler(store, config), config)
        scheduler.syncer.rng = random.Random(3)  # backoffs of minutes, not seconds
        try:
            for _ in range(3):  # one refused item per pass
                assert scheduler.run_once().failed == 1
            assert store.due_items() == []
            report = scheduler.run_once()  # the next timer pass: everything waits for its backoff
            assert report.failed == 0 and report.skipped_backoff == 3
            assert scheduler.indicator().state == "error"
            assert "credentials" in scheduler.indicator().last_error
            assert scheduler.panel.leds["error"].pin.state and not scheduler.panel.leds["ready"].pin.state
        finally:
            scheduler.stop()


def test_plain_http_to_the_clinic_server_turns_sync_off_not_the_reading_station(tmp_path):
    """`[dicomweb] url = http://pacs...` (not loopback) is refused, as docs/security.md says; the
    refusal raised out of the UI's services, so `glanceseg serve` exited and systemd's restarts
    kept the touchscreen dark: no screening at all for a sync setting. The station must come up,
    send nothing, and its Sync page say that the server address is wrong."""
    from appliance.ui.cli_ui import appliance_services

    config = make_config(tmp_path / "data", "http://pacs.clinic.example/dicom-web")
    services = appliance_services(config)
    try:
        assert services.scheduler is None
        add_study(services.store, 13)
        page = services.sync_status()
        assert page["pending"] == 3 and not page["available"]
        assert page["errors"][0].startswith("The appliance is set to the wrong address"), page
        assert "https://" in page["errors"][0]
    finally:
        services.close()
        services.store.close()


def test_https_url_to_a_plain_http_port_says_tls_failed(tmp_path, clean_orthanc):
    """`https://` to Orthanc's plain-http port: OpenSSL's "wrong version number", an ssl.SSLError
    whose .reason is a string, must come out as a TLS failure in a few words."""
    config = make_config(tmp_path / "data", f"https://127.0.0.1:{clean_orthanc.port}/dicom-web",
                         dicomweb={"user": USER, "password": PASSWORD})
    with Store(config) as store:
        add_study(store, 14)
        report = Syncer(store, config).run_pass()
        assert report.failed == 1 and report.remaining == 3
        assert store.sync_status().last_error == "TLS to the DICOMweb server failed: wrong version number."


@pytest.mark.parametrize("status, header, at_least_s", [
    (503, "120", 120.0),
    (429, "Fri, 01 Jan 2100 00:00:00 GMT", 3600.0),  # beyond the longest backoff: capped at it
])
def test_a_busy_server_is_left_alone_as_long_as_it_asks(tmp_path, clean_orthanc, tls, status, header, at_least_s):
    """A PACS under load answers 503 (or a gateway 429) with Retry-After. The item's next try
    comes no sooner than it asks (within the longest backoff), the pass stops at the first
    item instead of trying every study against a busy server, and the page says why; a 429
    used to count as one item's refusal, and the pass went on to the next."""
    busy = {"on": True}
    server, url = _serve(clean_orthanc, tls, "https",
                         lambda request: Reply(status, b"busy", {"Retry-After": header}) if busy["on"] else None)
    with server:
        config = _config(tmp_path, url, tls, **{}).replace(sync={"backoff_base_s": 1.0, "backoff_max_s": 3600.0})
        with Store(config) as store:
            add_study(store, 3)
            before = time.time()
            report = Syncer(store, config).run_pass()
            assert report.failed == 1 and report.delivered == 0
            items = store.outbox()
            assert [i.attempts for i in items] == [1, 0, 0]
            assert items[0].next_attempt_at >= before + at_least_s
            assert "busy" in items[0].last_error and f"HTTP {status}" in items[0].last_error
            busy["on"] = False
            assert Syncer(store, config).run_pass(ignore_backoff=True).delivered == 3
            assert check_server(store, clean_orthanc).lost == 0
