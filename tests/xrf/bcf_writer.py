"""Test-only writer of minimal Bruker ``.bcf`` files (an SFS container holding an EDS hypermap).

Written from the layout that rosettasciio's reader (``rsciio/bruker/_api.py`` and ``unbcf_fast.pyx``)
expects, so that its real reader opens the result:

* SFS container: ``AAMVHFSS`` signature; at 0x124 the version (float32) and the chunk size (uint32);
  at 0x140 the chunk index of the file tree, the number of tree items and the number of chunks.
  Chunk ``k`` starts at ``0x118 + k * chunksize``: a 32-byte chunk header (first uint32: the next
  chunk of a chained table) and ``chunksize - 32`` usable bytes.  Chunk 0 holds the file header.
* File tree: one 512-byte record per item (pointer-table chunk, size, three FILETIMEs,
  permissions, parent index, is-directory flag, name).  A file's pointer table lists the uint32
  chunk indices of its data; a table longer than one chunk is chained through the chunk headers.
* Optional zlib compression (global to the container): each file starts with an ``AACS`` header
  (uncompressed block size, number of blocks) padded to 0x80 bytes, then blocks of a 16-byte header
  (compressed size, uncompressed size, 0, compressed size + 16) and a zlib stream.
* ``EDSDatabase/HeaderData``: the XML header (image size, DSP timing, the sum spectrum with its
  calibration ``CalibAbs`` / ``CalibLin`` in keV, detector and XRF tube headers, element list).
* ``EDSDatabase/SpectrumData0``: height and width (int32) in a 0x1A0-byte header, then per line the
  number of pixels and per pixel a 22-byte header (x, channels, channels of this pixel, 4 unknown
  bytes, packing flag, 2 size bytes, number of pulses, data size) and its data, packed as a list of
  16-bit pulses (flag 0), 12-bit pulses (flag 1) or "instructed" runs of channels (flag > 1).
"""

from __future__ import annotations

import base64
import struct
import zlib
from math import ceil
from pathlib import Path

import numpy as np

SIGNATURE = b"AAMVHFSS"
CHUNK_HEADER = 32
FILE_OFFSET = 0x118  # chunk k starts at FILE_OFFSET + k * chunksize
ITEM = struct.Struct("<iQQQQIi176s?3s256s32s")  # 512 bytes
PIXEL = struct.Struct("<IHHIHHHI")  # 22 bytes
FILETIME = 133_000_000_000_000_000  # 2022-06-20, in 100 ns ticks since 1601


def write_bcf(
    path,
    cube: np.ndarray,
    offset_keV: float,
    gain_keV: float,
    *,
    packing: str = "pulses",
    compress: bool = False,
    chunksize: int = 8192,
    block_size: int = 8192,
    tube_kv: float = 50.0,
    pixel_size_um: float = 250.0,
    elements=("Fe", "Pb"),
) -> Path:
    """Write a (y, x, channel) count cube as a Bruker ``.bcf`` hypermap.

    ``packing``: ``"pulses"`` (flag 0, one uint16 channel per count), ``"12bit"`` (flag 1) or
    ``"instructed"`` (runs of channels with a base value, plus a few extra pulses).  ``compress``
    stores every internal file as zlib blocks of ``block_size`` uncompressed bytes.  rosettasciio's
    decoder reads past a block end only into the next block, so a pixel's data must fit in one block
    (or one chunk, uncompressed): larger pixels are refused.
    """
    cube = np.asarray(cube)
    if cube.ndim != 3 or cube.dtype.kind not in "ui" or cube.min() < 0:
        raise ValueError("cube must be a non-negative integer (y, x, channel) array")
    header = _header_xml(cube, offset_keV, gain_keV, tube_kv, pixel_size_um, elements)
    stream, largest = _spectrum_stream(cube, packing)
    if largest > min(chunksize - CHUNK_HEADER, block_size if compress else chunksize):
        raise ValueError(f"a pixel packs to {largest} bytes: raise chunksize / block_size above that")
    files = [("EDSDatabase", None), ("HeaderData", header), ("SpectrumData0", stream)]
    if compress:
        files = [(name, None if data is None else _compress(data, block_size)) for name, data in files]
    path = Path(path)
    path.write_bytes(_sfs_container(files, chunksize))
    return path


# -- SFS container -------------------------------------------------------------------------------
def _sfs_container(files, chunksize: int) -> bytes:
    usable = chunksize - CHUNK_HEADER
    chunks: dict[int, tuple[int, bytes]] = {}  # index -> (next chunk, payload)
    next_free = 2  # 0: file header, 1: file tree
    records = []
    for position, (name, data) in enumerate(files):
        parent = -1 if position == 0 else 0
        if data is None:
            records.append(ITEM.pack(0, 0, FILETIME, FILETIME, FILETIME, 0, parent, b"", True, b"", name.encode(),
                                     b""))
            continue
        n_data = max(1, ceil(len(data) / usable))
        n_table = ceil(n_data / (usable // 4))
        table_chunks = list(range(next_free, next_free + n_table))
        data_chunks = list(range(next_free + n_table, next_free + n_table + n_data))
        next_free += n_table + n_data
        table = np.asarray(data_chunks, dtype="<u4").tobytes()
        for i, index in enumerate(table_chunks):
            following = table_chunks[i + 1] if i + 1 < n_table else 0
            chunks[index] = (following, table[i * (usable // 4) * 4:(i + 1) * (usable // 4) * 4])
        for i, index in enumerate(data_chunks):
            chunks[index] = (0, data[i * usable:(i + 1) * usable])
        records.append(ITEM.pack(table_chunks[0], len(data), FILETIME, FILETIME, FILETIME, 0, parent, b"", False,
                                 b"", name.encode(), b""))
    tree = b"".join(records)
    if len(tree) > usable:
        raise ValueError("this writer keeps the file tree in one chunk; use a larger chunksize")
    chunks[1] = (0, tree)
    out = bytearray(FILE_OFFSET + next_free * chunksize)
    out[: len(SIGNATURE)] = SIGNATURE
    struct.pack_into("<fI", out, 0x124, 2.60, chunksize)
    struct.pack_into("<III", out, 0x140, 1, len(records), next_free)
    for index, (following, payload) in chunks.items():
        start = FILE_OFFSET + index * chunksize
        struct.pack_into("<I", out, start, following)
        out[start + CHUNK_HEADER:start + CHUNK_HEADER + len(payload)] = payload
    # the file ends right after the last byte in use (as a truncated tail would not)
    last_index = max(chunks)
    end = FILE_OFFSET + last_index * chunksize + CHUNK_HEADER + len(chunks[last_index][1])
    return bytes(out[:end])


def _compress(data: bytes, block_size: int) -> bytes:
    blocks = [data[i:i + block_size] for i in range(0, len(data), block_size)] or [b""]
    head = struct.pack("<4sIII", b"AACS", block_size, 0, len(blocks)).ljust(0x80, b"\0")
    parts = [head]
    for block in blocks:
        packed = zlib.compress(block)
        parts.append(struct.pack("<IIII", len(packed), len(block), 0, len(packed) + 16) + packed)
    return b"".join(parts)


# -- EDSDatabase/SpectrumData0 -------------------------------------------------------------------
def _spectrum_stream(cube: np.ndarray, packing: str) -> bytes:
    height, width, n_channels = cube.shape
    parts = [struct.pack("<ii", height, width).ljust(0x1A0, b"\0")]
    largest = 0
    for y in range(height):
        parts.append(struct.pack("<i", width))
        for x in range(width):
            counts = cube[y, x].astype(np.int64)
            after = b""
            if packing == "pulses":
                pulses = np.repeat(np.arange(n_channels), counts).astype("<u2")
                data, flag, n_pulses = pulses.tobytes(), 0, pulses.size
            elif packing == "12bit":
                pulses = np.repeat(np.arange(n_channels), counts)
                data, flag, n_pulses = _pack_12bit(pulses), 1, pulses.size
            elif packing == "instructed":
                data, after, n_pulses = _pack_instructed(counts)
                flag = 3
            else:
                raise ValueError(f"unknown packing {packing!r}")
            if n_pulses > 0xFFFF:
                raise ValueError("a pixel holds more pulses than a uint16 can count")
            parts.append(PIXEL.pack(x, n_channels, n_channels, 0x2A, flag, 0, n_pulses, len(data)))
            parts.append(data + after)
            largest = max(largest, len(data) + len(after))
    return b"".join(parts), largest


def _pack_12bit(pulses: np.ndarray) -> bytes:
    """Four 12-bit channels in six bytes, in the nibble order unbcf_fast's unpack12bit reads."""
    if pulses.size and pulses.max() > 0xFFF:
        raise ValueError("12-bit packing holds channels below 4096 only")
    padded = np.zeros(ceil(pulses.size / 4) * 4, dtype=np.int64)
    padded[: pulses.size] = pulses
    out = bytearray()
    for p0, p1, p2, p3 in padded.reshape(-1, 4):
        out += bytes([((p0 & 0xF) << 4) | (p1 >> 8), p0 >> 4, p2 >> 4, p1 & 0xFF, p3 & 0xFF,
                      ((p2 & 0xF) << 4) | (p3 >> 8)])
    return bytes(out)


def _pack_instructed(counts: np.ndarray) -> tuple[bytes, bytes, int]:
    """Runs of up to 255 channels (zeros, 4-bit, 8-bit or 16-bit values above a base), then extra pulses.

    One count of every fifth non-empty channel is moved to the extra-pulse list, so both parts are used.
    """
    counts = counts.copy()
    extra = [c for c in np.flatnonzero(counts)[::5]]
    counts[extra] -= 1
    out = bytearray()
    for start in range(0, counts.size, 255):
        run = counts[start:start + 255]
        n = run.size
        if not run.any():
            out += bytes([0, n])
            continue
        base = int(run.min())
        delta = run - base
        if delta.max() <= 0xF and base <= 0xFF:  # nibbles, low nibble first
            nibbles = np.zeros(ceil(n / 2) * 2, dtype=np.uint8)
            nibbles[:n] = delta
            out += bytes([1, n, base]) + (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
        elif delta.max() <= 0xFF and base <= 0xFFFF:
            out += bytes([2, n]) + struct.pack("<H", base) + delta.astype(np.uint8).tobytes()
        else:
            out += bytes([4, n]) + struct.pack("<I", base) + delta.astype("<u2").tobytes()
    # the pixel's data size covers the runs and a last 4-byte field holding the byte size of the
    # extra pulses, which follow outside it
    out += struct.pack("<I", 2 * len(extra))
    return bytes(out), np.asarray(extra, dtype="<u2").tobytes(), len(extra)


# -- EDSDatabase/HeaderData ----------------------------------------------------------------------
def _header_xml(cube, offset_keV, gain_keV, tube_kv, pixel_size_um, elements) -> bytes:
    height, width, n_channels = cube.shape
    total = cube.sum(axis=(0, 1), dtype=np.int64)
    image = cube.sum(axis=2, dtype=np.int64).clip(0, 0xFFFF).astype("<u2")
    layers = base64.b64encode(zlib.compress(b'<DetLayers><Layer0 Atom="4" Thickness="0.0008"/></DetLayers>'))
    regions = "".join(
        f'<ClassInstance Type="TRTSpectrumRegion" Name="{symbol}"><Line>K</Line><Energy>0</Energy></ClassInstance>'
        for symbol in elements
    )
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<TRTSpectrumDatabaseFile>
 <ClassInstance Type="TRTSpectrumDatabase" Name="synthetic painting">
  <Header><Date>20.06.2022</Date><Time>10:30:00</Time><FileVersion>2</FileVersion></Header>
  <ClassInstance Type="TRTSEMData"><DX>{pixel_size_um!r}</DX><DY>{pixel_size_um!r}</DY></ClassInstance>
  <ClassInstance Type="TRTSEMStageData"><X>0</X><Y>0</Y></ClassInstance>
  <ClassInstance Type="TRTDSPConfiguration">
   <LineAverage>1</LineAverage><PixelAverage>1</PixelAverage><PixelTime>10000</PixelTime>
  </ClassInstance>
  <ClassInstance Type="TRTImageData">
   <Width>{width}</Width><Height>{height}</Height><ItemSize>2</ItemSize><PlaneCount>1</PlaneCount>
   <Plane0><Description>Counts</Description><Data>{base64.b64encode(image.tobytes()).decode()}</Data></Plane0>
  </ClassInstance>
  <ClassInstance Type="TRTContainerClass"><ChildClassInstances>
   <ClassInstance Type="TRTElementInformationList">
    <ClassInstance Type="TRTSpectrumRegionList"><ChildClassInstances>{regions}</ChildClassInstances></ClassInstance>
   </ClassInstance>
  </ChildClassInstances></ClassInstance>
  <LineCounter>{",".join([str(width)] * height)}</LineCounter>
  <ChCount>{n_channels}</ChCount>
  <DetectorCount>1</DetectorCount>
  <SpectrumData0>
   <ClassInstance Type="TRTSpectrum" Name="sum spectrum">
    <TRTHeaderedClass>
     <ClassInstance Type="TRTSpectrumHardwareHeader">
      <RealTime>{height * width * 10}</RealTime><LifeTime>{height * width * 9}</LifeTime>
      <Amplification>{int(round((offset_keV + gain_keV * n_channels) * 1000))}</Amplification>
     </ClassInstance>
     <ClassInstance Type="TRTDetectorHeader"><Type>XFlash 6|30</Type><DetLayers>{layers.decode()}</DetLayers>
     </ClassInstance>
     <ClassInstance Type="TRTXrfHeader">
      <Voltage>{tube_kv!r}</Voltage><Current>600</Current><ExcitationAngle>45</ExcitationAngle>
     </ClassInstance>
    </TRTHeaderedClass>
    <ClassInstance Type="TRTSpectrumHeader">
     <Date>20.06.2022</Date><Time>10:30:00</Time><ChannelCount>{n_channels}</ChannelCount>
     <CalibAbs>{offset_keV!r}</CalibAbs><CalibLin>{gain_keV!r}</CalibLin>
    </ClassInstance>
    <Channels>{",".join(str(int(v)) for v in total)}</Channels>
   </ClassInstance>
  </SpectrumData0>
 </ClassInstance>
</TRTSpectrumDatabaseFile>
"""
    return xml.encode("utf-8")
