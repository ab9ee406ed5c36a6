"""Pack onnxruntime-gpu for one GPU architecture into a small archive (for a machine that
cannot reach pip and takes uploads of limited size).

The onnxruntime-gpu 1.31 wheel is 255 MB, most of it CUDA machine code for seven GPU
architectures in libonnxruntime_providers_cuda.so. This keeps the code of one (`--sm 90`:
H100/H200) and zeroes the others' in place (the file keeps its layout, the zeros compress
away), leaves out the C API library and the TensorRT provider (the Python module needs
neither), and writes the package folders as a .tar.xz: 58 MiB for sm_90. Unpack it into a
folder on PYTHONPATH; the CUDA libraries themselves (cuBLAS, cuDNN, cuRAND, cudart) are not
in the wheel (README, "On CUDA").

    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
        -d wheels onnxruntime-gpu==1.31.1
    python tools/ort_gpu_pack.py wheels/onnxruntime_gpu-1.31.1-cp312-*.whl ort-gpu.tar.xz --sm 90
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import tarfile
import zipfile

FATBIN_MAGIC = 0xBA55ED50
LEFT_OUT = ("libonnxruntime.so", "libonnxruntime_providers_tensorrt.so")


def elf_section(data: bytes, name: bytes) -> tuple[int, int]:
    """(file offset, size) of a 64-bit little-endian ELF file's section `name`."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i):
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)  # name, type, flags, addr, offset, size
    strtab = header(shstrndx)[4]
    for i in range(shnum):
        h = header(i)
        if data[strtab + h[0]:strtab + h[0] + len(name) + 1] == name + b"\0":
            return h[4], h[5]
    raise ValueError(f"no {name.decode()} section")


def keep_one_arch(data: bytearray, sm: int) -> tuple[int, int]:
    """Zero every CUDA machine-code and PTX entry of the .nv_fatbin section that is not for
    `sm`; returns (bytes kept, bytes zeroed). Entry header: kind u16, version u16, header
    size u32, payload size u64, ..., architecture u32 at byte 28."""
    start, size = elf_section(data, b".nv_fatbin")
    pos, end, kept, zeroed = start, start + size, 0, 0
    while pos + 16 <= end:
        magic, _, header, length = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fat binaries are 8-byte aligned
            continue
        entry, stop = pos + header, pos + header + length
        while entry < stop:
            _, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch, = struct.unpack_from("<I", data, entry + 28)
            body = entry + entry_header
            if arch == sm:
                kept += payload
            else:
                data[body:body + payload] = bytes(payload)
                zeroed += payload
            entry = body + payload
        pos = stop
    return kept, zeroed


def pack(wheel: str, out: str, sm: int):
    with zipfile.ZipFile(wheel) as z, tarfile.open(out, "w:xz", preset=9) as tar:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or name.rsplit("/", 1)[-1].startswith(LEFT_OUT):
                continue
            data = bytearray(z.read(info))
            if name.endswith("libonnxruntime_providers_cuda.so"):
                kept, zeroed = keep_one_arch(data, sm)
                print(f"{name}: kept {kept / 1e6:.1f} MB of sm_{sm} code, zeroed {zeroed / 1e6:.1f} MB", file=sys.stderr)
                if not kept:
                    raise SystemExit(f"no code for sm_{sm} in {name}")
            t = tarfile.TarInfo(name)
            t.size, t.mode = len(data), 0o755 if name.endswith(".so") else 0o644
            tar.addfile(t, io.BytesIO(data))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel")
    ap.add_argument("out", help="the .tar.xz to write")
    ap.add_argument("--sm", type=int, default=90, help="GPU architecture to keep (90: Hopper; 80: A100; 89: Ada)")
    args = ap.parse_args(argv)
    pack(args.wheel, args.out, args.sm)


if __name__ == "__main__":
    main()
