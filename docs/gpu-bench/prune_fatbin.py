"""Zero every cubin in a CUDA library's fatbins that is not for sm_90, so the file compresses.

Usage: prune_fatbin.py IN.so OUT.so OFFSET SIZE   (hex, of .nv_fatbin: readelf -S -W IN.so)
A fatbin with no sm_90 cubin is zeroed too: its kernels could not run on sm_90 anyway (no PTX).
"""
import struct, sys
path, out = sys.argv[1], sys.argv[2]
off0, size = int(sys.argv[3], 16), int(sys.argv[4], 16)
data = bytearray(open(path, 'rb').read())
p, end_sec = off0, off0 + size
kept = zeroed = 0
missing = 0
while p < end_sec - 16:
    magic, ver, hsz, fatsize = struct.unpack_from('<IHHQ', data, p)
    if magic != 0xBA55ED50:
        p += 8; continue
    q, end = p + hsz, p + hsz + fatsize
    has90 = False
    while q < end:
        kind, ev, ehsz, padded = struct.unpack_from('<HHIQ', data, q)
        sm = struct.unpack_from('<I', data, q + 28)[0]
        if sm == 90:
            has90 = True; kept += padded
        else:
            data[q + ehsz:q + ehsz + padded] = bytes(padded); zeroed += padded
        q += ehsz + padded
    missing += not has90
    p = end
open(out, 'wb').write(data)
print('kept', kept/1e6, 'zeroed', zeroed/1e6, 'fatbins without sm_90', missing)
