"""Scene video for the fake Neon: H.264 frames packetised for RTP as the Companion sends them.

Frames are encoded with libx264 (PyAV) as intra-only pictures, so any frame can start a new
client's decoding; SPS/PPS go into the SDP's ``sprop-parameter-sets`` (the client feeds them
to its decoder before the first frame). NAL units larger than one datagram are split into
FU-A fragments (RFC 6184 §5.8), which is what the client's ``extract_payload_from_nal_unit``
reassembles.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

MAX_RTP_PAYLOAD = 1400


def _split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (start codes removed)."""
    out, i, n = [], 0, len(data)
    starts = []
    while i < n - 3:
        if data[i:i + 3] == b"\x00\x00\x01":
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        nal = data[s:end]
        while nal.endswith(b"\x00"):  # a 4-byte start code leaves a zero behind
            nal = nal[:-1]
        out.append(nal)
    return out


@dataclass
class EncodedFrame:
    """One picture as the RTP payloads to send (all with the same timestamp)."""

    payloads: list[bytes]


class SceneEncoder:
    """Encode BGR frames once; the fake replays their packets with fresh timestamps."""

    def __init__(self, width: int, height: int) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, 30)
        ctx.gop_size = 1
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "16", "x264-params": "keyint=1:repeat-headers=1"}
        self._ctx = ctx
        self._pts = 0
        self.sps: bytes = b""
        self.pps: bytes = b""

    def encode(self, bgr: np.ndarray) -> EncodedFrame:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24").reformat(format="yuv420p")
        frame.pts = self._pts
        self._pts += 1
        data = b"".join(bytes(p) for p in self._ctx.encode(frame))
        payloads = []
        for nal in _split_annexb(data):
            kind = nal[0] & 0x1F
            if kind == 7:
                self.sps = nal
                continue
            if kind == 8:
                self.pps = nal
                continue
            payloads.extend(packetize(nal))
        return EncodedFrame(payloads)

    def sprop(self) -> str:
        return ",".join(base64.b64encode(p).decode() for p in (self.sps, self.pps))


def packetize(nal: bytes) -> list[bytes]:
    """A NAL unit as one single-NAL payload, or as FU-A fragments when too large."""
    if len(nal) <= MAX_RTP_PAYLOAD:
        return [nal]
    indicator = (nal[0] & 0xE0) | 28
    kind = nal[0] & 0x1F
    body = nal[1:]
    chunks = [body[i:i + MAX_RTP_PAYLOAD - 2] for i in range(0, len(body), MAX_RTP_PAYLOAD - 2)]
    out = []
    for k, chunk in enumerate(chunks):
        header = kind | (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
        out.append(bytes((indicator, header)) + chunk)
    return out
