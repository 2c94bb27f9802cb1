"""A small DICOMweb client: STOW-RS to store, QIDO-RS to confirm, WADO-RS to read back.

Transport rules: ``https`` always, verified against the configured CA bundle (or the system store);
credentials by HTTP basic auth and/or a client certificate; plain ``http`` is refused unless the
host is a loopback address (a local Orthanc or a tunnel endpoint on the device itself), so a
password never crosses a network in clear text. A redirect is never followed (it could lead to
plain http or another host); it fails with the address it names.
"""

from __future__ import annotations

import email.utils
import errno
import io
import ipaddress
import logging
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

import requests

from appliance.config import DicomwebConfig
from appliance.errors import SyncError

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_REFERENCED_SOP_SEQ = "00081199"
_FAILED_SOP_SEQ = "00081198"
_REF_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"


class ServerUnavailable(SyncError):
    """The server cannot take anything now (unreachable, timed out, refused the credentials, or
    failed): the rest of a pass would fail the same way, so the pass stops early.

    ``retry_after_s``: how long the server asked to be left alone (a 503 or 429 with
    ``Retry-After``), or None.
    """

    def __init__(self, message: str, retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_s(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None if absent
    or unreadable (RFC 9110, 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Unreachable(ServerUnavailable):
    """No connection to the server could be made or it went silent (refused, no route, no DNS
    answer, timed out): the station is offline, as opposed to a server that answered no."""


def transport_reason(exc: BaseException) -> str:
    """Return the innermost cause of a failed connection in a few words, without the URL.

    Why: requests' own text names the full URL, study and instance UIDs included, and the Sync
    page picks its explanation by words such as "401" or "500" in the error, so a UID's digits
    turned an untrusted certificate into "refused the credentials"; the type name alone
    ("ConnectionError") did not say whether the name, the route or the server was the problem.
    """
    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [exc]
    other_ssl: Optional[ssl.SSLError] = None
    while todo:
        cause = todo.pop(0)
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {str(cause.verify_message).rstrip('.')}"
        if isinstance(cause, ssl.SSLError):
            other_ssl = other_ssl or cause
        elif isinstance(cause, socket.gaierror):
            return f"the server's name does not resolve (DNS: {cause.strerror})"
        elif isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        elif isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return "the connection was dropped"
        elif isinstance(cause, (TimeoutError, requests.exceptions.Timeout)):
            return "timed out"
        elif isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"no route to the server ({cause.strerror})"
        # urllib3 keeps the cause in .reason; ssl.SSLError's .reason is a string (its short code).
        todo += [c for c in (cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args)
                 if isinstance(c, BaseException)]
    if other_ssl is not None:
        return str(other_ssl.reason or other_ssl.strerror or type(other_ssl).__name__).replace("_", " ").lower()
    return type(exc).__name__


def is_loopback(host: str) -> bool:
    """Return True for ``localhost`` and loopback IP addresses."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StowOutcome:
    """What the server said about one STOW-RS request."""

    status: int
    stored: frozenset[str]
    failed: dict[str, str]


class DicomwebClient:
    """Blocking DICOMweb client built from ``[dicomweb]``.

    Raises
    ------
    SyncError
        On construction, if the URL is missing, not http(s), or plain http to a non-loopback host,
        or a client certificate is given without its key.
    """

    def __init__(self, config: DicomwebConfig, session: Optional[requests.Session] = None) -> None:
        url = config.url.strip().rstrip("/")
        if not url:
            raise SyncError("No DICOMweb server is configured (set [dicomweb] url or GLANCESEG_DICOMWEB_URL).")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SyncError(f"The DICOMweb URL must be an http(s) URL, not {url!r}.")
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL reach logs, status pages and support archives verbatim.
            raise SyncError("Put the DICOMweb user and password in [dicomweb] user and password, not in the URL.")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise SyncError("Plain http is accepted only for a loopback address: set [dicomweb] url to the "
                            "clinic server's https:// address.")
        if config.key and not config.cert:
            raise SyncError("A client key needs its certificate ([dicomweb] cert).")
        self.base = url
        self.timeout_s = float(config.timeout_s)
        self.session = session or requests.Session()
        self.session.verify = config.ca or True
        if config.cert:
            self.session.cert = (config.cert, config.key) if config.key else config.cert
        if config.user:
            self.session.auth = (config.user, config.password)
        self.session.headers["User-Agent"] = "glanceseg-sync"
        #: Why the last :meth:`reachable` found no server (None when it found one).
        self.unreachable_reason: Optional[str] = None

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def _request(self, method: str, path: str, timeout_s: Optional[float] = None, **kwargs: Any) -> requests.Response:
        try:
            # verify and cert go with every request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
            # from the environment override a session's own CA bundle (psf/requests#3829).
            # Redirects are not followed: requests re-sends a 307/308 body (the photograph, with the
            # patient ID) wherever Location points, plain http or another host included, and turns
            # a 301/302 POST into a GET that looks like an empty answer.
            response = self.session.request(method, self.base + path, timeout=timeout_s or self.timeout_s,
                                            verify=self.session.verify, cert=self.session.cert,
                                            allow_redirects=False, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise ServerUnavailable(f"TLS to the DICOMweb server failed: {transport_reason(exc)}.") from exc
        except requests.RequestException as exc:
            raise Unreachable(f"The DICOMweb server is unreachable: {transport_reason(exc)}.") from exc
        if response.status_code in (401, 403):
            raise ServerUnavailable(f"The DICOMweb server refused the credentials (HTTP {response.status_code}).")
        if 300 <= response.status_code < 400:
            target = urlsplit(response.headers.get("Location", ""))
            where = f"{target.scheme}://{target.netloc}" if target.netloc else "another address"
            raise ServerUnavailable(f"The DICOMweb server redirected the request to {where} (HTTP "
                                    f"{response.status_code}), which is not followed: set [dicomweb] url to "
                                    "the server's DICOMweb root itself.")
        if response.status_code in (429, 503):  # busy: leave it alone as long as it asks
            wait = retry_after_s(response.headers.get("Retry-After"))
            raise ServerUnavailable(f"The DICOMweb server is busy (HTTP {response.status_code})"
                                    + (f"; it asked for {wait:.0f} s before the next try." if wait is not None else "."),
                                    retry_after_s=wait)
        if response.status_code >= 500:
            raise ServerUnavailable(f"The DICOMweb server failed (HTTP {response.status_code}).")
        return response

    def reachable(self, timeout_s: float = 5.0) -> bool:
        """Return True when the server answers a QIDO-RS query at all, whatever it answers.

        Only a connection that cannot be made (or times out) is unreachable. A refused password,
        an untrusted certificate, a wrong DICOMweb root or a failing server is reachable: the
        scheduler then makes its pass, whose first item records the real error where the Sync
        page, ``sync --status`` and the LEDs read it. Counted as unreachable, those showed as
        "not reachable" (or nothing at all on the Sync page) while the station waited forever.
        When False, ``unreachable_reason`` says why (connection refused, name does not resolve...).
        """
        self.unreachable_reason = None
        try:
            self._request("GET", "/studies", timeout_s=timeout_s, params={"limit": "1"},
                          headers={"Accept": DICOM_JSON})
        except Unreachable as exc:
            self.unreachable_reason = str(exc)
            return False
        except SyncError:
            pass  # it answered, if only to say no
        return True

    def store(self, study_uid: str, sop_uid: str, data: bytes) -> StowOutcome:
        """Send one Part-10 instance by STOW-RS to ``/studies/{study}``.

        Raises
        ------
        SyncError
            On a transport error, an authentication refusal, a server error or a malformed answer;
            a refusal of the instance itself is returned in ``failed``.
        """
        boundary = f"glanceseg-{uuid.uuid4().hex}"
        body = b"".join([
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"),
            data,
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        ])
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": DICOM_JSON,
        }
        # A stream, not bytes: a bytes body goes out in one sendall(), and Python's timeout bounds a
        # whole sendall(), so every upload had to finish within timeout_s (a 37 MB photograph needs
        # 10 Mbit/s to fit in 30 s; on a clinic's slower uplink it timed out on every pass and was
        # never delivered). Streamed in blocks, timeout_s bounds each block: the upload may take as
        # long as the link needs, and only a link that moves nothing for timeout_s fails.
        response = self._request("POST", f"/studies/{study_uid}", data=io.BytesIO(body), headers=headers)
        if response.status_code in (404, 405):
            # Every item would get the same answer, each after uploading its whole file: stop the pass.
            raise ServerUnavailable(f"There is no DICOMweb service at {self.base} (STOW-RS answered HTTP "
                                    f"{response.status_code}): set [dicomweb] url to the server's DICOMweb root "
                                    "(for Orthanc, http(s)://host:port/dicom-web).")
        if response.status_code == 413:
            raise SyncError(f"The server refused the {len(data) / 1e6:.1f} MB upload as too large (HTTP 413): "
                            "raise the upload limit of the server or of the proxy in front of it "
                            "(nginx: client_max_body_size).")
        if response.status_code not in (200, 202, 409):
            raise SyncError(f"STOW-RS answered HTTP {response.status_code}.")
        stored, failed = set(), {}
        # JSON of another shape (a proxy's error object, a list) is as malformed as no JSON: it
        # raised AttributeError, which no caller expects, and crashed the pass mid-item.
        try:
            doc = response.json() if response.content else {}
            for entry in (doc.get(_REFERENCED_SOP_SEQ, {}) or {}).get("Value", []) or []:
                stored.update((entry.get(_REF_SOP_INSTANCE, {}) or {}).get("Value", []) or [])
            for entry in (doc.get(_FAILED_SOP_SEQ, {}) or {}).get("Value", []) or []:
                for uid in (entry.get(_REF_SOP_INSTANCE, {}) or {}).get("Value", []) or []:
                    reason = (entry.get(_FAILURE_REASON, {}) or {}).get("Value", ["?"])
                    failed[str(uid)] = str(reason[0] if reason else "?")
        except (ValueError, AttributeError, TypeError) as exc:
            raise SyncError("STOW-RS answered with a body that is not DICOM JSON.") from exc
        return StowOutcome(response.status_code, frozenset(stored), failed)

    def instance_exists(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Return True when QIDO-RS finds the instance on the server.

        Raises
        ------
        SyncError
            When the query itself fails (the answer is then unknown, not "absent").
        """
        response = self._request(
            "GET", f"/studies/{study_uid}/series/{series_uid}/instances",
            params={"SOPInstanceUID": sop_uid}, headers={"Accept": DICOM_JSON},
        )
        if response.status_code == 204 or (response.status_code == 404):
            return False
        if response.status_code != 200:
            raise SyncError(f"QIDO-RS answered HTTP {response.status_code}.")
        try:
            matches = response.json() or []
            return any(sop_uid in ((match.get("00080018", {}) or {}).get("Value", []) or []) for match in matches)
        except (ValueError, AttributeError, TypeError) as exc:
            raise SyncError("QIDO-RS answered with a body that is not DICOM JSON.") from exc

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """Return one instance's Part-10 bytes by WADO-RS (tests and audits)."""
        response = self._request(
            "GET", f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        if response.status_code != 200:
            raise SyncError(f"WADO-RS answered HTTP {response.status_code}.")
        return _first_part(response)


def _first_part(response: requests.Response) -> bytes:
    ctype = response.headers.get("Content-Type", "")
    marker = "boundary="
    if marker not in ctype:
        return response.content
    boundary = ctype.split(marker, 1)[1].split(";")[0].strip().strip('"').encode("ascii")
    body = response.content
    start = body.index(b"--" + boundary)
    header_end = body.index(b"\r\n\r\n", start) + 4
    end = body.index(b"\r\n--" + boundary, header_end)
    return body[header_end:end]
