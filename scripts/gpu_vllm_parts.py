"""Pack vLLM for a GPU machine that cannot reach a package index, in parts small enough to send one per call.

    python scripts/gpu_vllm_parts.py --out .carry/vllm [--part-mb 62] [--no-fa3]

For this workplace's lent GPU (an H200 image with torch 2.11.0 + CUDA 13, no vLLM, no network; a command may
carry 64 MiB). vLLM 0.24.0 is the release that pins torch==2.11.0, and its kernels link libcudart.so.13, so it
matches that image. Its wheel is 279 MB; what a dense model needs of it is 97 MB compressed (the FlashAttention-2
and MoE kernels, the Rust frontend and the vendored JIT sources left out), plus 38 MB for FlashAttention-3 (the
Hopper default; without it pass attention_backend="TRITON_ATTN" to `LLM`), plus 31 MB of pure-Python and small
binary dependencies the image lacks: about 167 MB, three parts. The embedded model's GGUF (98 MB) travels as the
device tool's README says, in two more calls: five in all, against one for a run without vLLM.

Writes OUT/part1 ... OUT/partN (each under --part-mb) and OUT/CALLS.txt, the command for each call: parts 1..N-1
stage their files in /tmp/vllm-parts on the machine, the last one joins them, unpacks vLLM into /tmp/site and
installs the dependencies there (then run with PYTHONPATH=/tmp/site). Successive calls must come while the
machine is still warm (its idle release is 30 s).

Checked on the 2-core CPU VM (2026-12-04): 166.5 MB in three parts (62.0, 62.0, 42.4 MB; the repository adds about
3 MB to each call); the parts staged, joined and unpacked as the calls say, and the wheels installed into a target
for CPython 3.12 (the last call's pip run, with --python-version 3.12 here since this VM runs 3.11): vLLM 0.24.0 and
its 67 dependency wheels in place. Not run on the GPU machine yet: importing and starting vLLM there (CUDA 13,
torch 2.11.0) is the part only it can check; the session that wrote this had 475 s of device time left.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VLLM = "vllm==0.24.0"
# The dependencies vLLM 0.24.0 imports that the GPU image lacks (resolved for CPython 3.12, manylinux x86_64;
# the image's own torch, transformers, numpy, aiohttp, ... are used as they are).
DEPENDENCIES = [
    "annotated_types==0.8.0",
    "anthropic==2.17.0",
    "astor==0.8.1",
    "blake3==1.0.11",
    "cachetools==8.0.2",
    "cbor2==6.3.0",
    "compressed_tensors==0.17.0",
    "depyf==0.20.0",
    "dill==0.4.1",
    "diskcache==5.6.3",
    "docstring_parser==0.18.0",
    "fastapi==0.136.3",
    "googleapis_common_protos==1.76.0",
    "httpcore2==2.16.2",
    "httpx2==2.16.2",
    "ijson==3.6.0",
    "interegular==0.3.3",
    "jiter==0.19.0",
    "jmespath==1.1.0",
    "jsonschema==4.26.0",
    "jsonschema_specifications==2025.9.1",
    "lark==1.2.2",
    "llguidance==1.7.6",
    "lm_format_enforcer==0.11.3",
    "loguru==0.7.3",
    "mcp==2.3.0",
    "mcp_types==2.3.0",
    "mistral_common==1.13.1",
    "model_hosting_container_standards==0.1.16",
    "msgspec==0.23.0",
    "openai==3.60.0",
    "openai_harmony==0.0.8",
    "opentelemetry_api==1.45.2",
    "opentelemetry_exporter_http_transport==0.66b2",
    "opentelemetry_exporter_otlp==1.45.2",
    "opentelemetry_exporter_otlp_common==0.66b2",
    "opentelemetry_exporter_otlp_proto_common==1.45.2",
    "opentelemetry_exporter_otlp_proto_grpc==1.45.2",
    "opentelemetry_exporter_otlp_proto_http==1.45.2",
    "opentelemetry_proto==1.45.2",
    "opentelemetry_sdk==1.45.2",
    "opentelemetry_semantic_conventions==0.66b2",
    "opentelemetry_semantic_conventions_ai==0.5.1",
    "outlines_core==0.2.14",
    "partial_json_parser==0.2.1.1.post7",
    "prometheus_fastapi_instrumentator==8.1.0",
    "pybase64==1.5.1",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "pydantic_extra_types==2.11.1",
    "pyjwt==2.15.1",
    "python_json_logger==4.2.0",
    "python_multipart==0.0.34",
    "pyzmq==27.3.0",
    "referencing==0.37.0",
    "rpds_py==2026.9.1",
    "setproctitle==1.3.8",
    "sniffio==1.3.1",
    "sse_starlette==3.7.1",
    "starlette==1.10.0",
    "supervisor==4.3.0",
    "truststore==0.10.5",
    "typing_extensions==4.16.0",
    "typing_inspection==0.4.5",
    "uvicorn==0.55.0",
    "watchfiles==1.3.0",
    "xgrammar==0.2.9",
]
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 26, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64", "any"]
# Left out of the slim package: kernels a dense model does not run, the Rust frontend, vendored JIT sources.
DROP = ("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/_moe_C_stable_libtorch.abi3.so", "vllm/vllm-rs")
DROP_PREFIXES = ("vllm/third_party/",)
FA3 = "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"


def download(requirements: list[str], folder: Path) -> None:
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", "3.12", "--implementation", "cp", *platform_args, "-d", str(folder), *requirements],
        check=True,
    )


def slim(wheel: Path, out: Path, with_fa3: bool) -> list[Path]:
    """The wheel's files a dense model needs, as zips to unpack into a site folder: vLLM, then FlashAttention-3."""
    made = [out / "vllm_slim.zip"] + ([out / "vllm_fa3.zip"] if with_fa3 else [])
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(made[0], "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        fa3 = zipfile.ZipFile(made[1], "w", zipfile.ZIP_DEFLATED, compresslevel=9) if with_fa3 else None
        for info in src.infolist():
            if info.filename == FA3:
                if fa3 is not None:
                    fa3.writestr(info, src.read(info))
            elif info.filename not in DROP and not info.filename.startswith(DROP_PREFIXES):
                dst.writestr(info, src.read(info))
        if fa3 is not None:
            fa3.close()
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".carry/vllm")
    parser.add_argument("--part-mb", type=float, default=62.0, help="the most one call carries, besides the repo")
    parser.add_argument("--no-fa3", action="store_true", help="leave FlashAttention-3 out (use TRITON_ATTN)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        download([VLLM], work / "vllm")
        download(DEPENDENCIES, work / "deps")
        pieces = slim(next((work / "vllm").glob("vllm-*.whl")), work, not args.no_fa3)
        pieces += sorted((work / "deps").glob("*.whl"))
        # Pack whole files into parts, largest first, each into the first part with room (a file larger than a
        # part is split into chunks, joined on the machine): fewer parts, fewer calls.
        limit = int(args.part_mb * 1e6)
        chunks: list[tuple[str, bytes]] = []
        for piece in pieces:
            data = piece.read_bytes()
            pieces_of = [data[i : i + limit] for i in range(0, len(data), limit)]
            chunks += [
                (piece.name if len(pieces_of) == 1 else f"{piece.name}.chunk{k:02d}", chunk)
                for k, chunk in enumerate(pieces_of)
            ]
        sizes: list[int] = []
        for name, chunk in sorted(chunks, key=lambda c: -len(c[1])):
            k = next((k for k, size in enumerate(sizes) if size + len(chunk) <= limit), len(sizes))
            if k == len(sizes):
                sizes.append(0)
            folder = out / f"part{k + 1}"
            folder.mkdir(exist_ok=True)
            (folder / name).write_bytes(chunk)
            sizes[k] += len(chunk)
        parts = range(1, len(sizes) + 1)
    stage = "mkdir -p /tmp/vllm-parts && cp {folder}/* /tmp/vllm-parts/"
    finish = (
        "cd /tmp/vllm-parts && for f in $(ls *.chunk00 2>/dev/null); do b=${f%.chunk00}; cat $b.chunk* > $b && "
        "rm $b.chunk*; done && mkdir -p /tmp/site && (cd /tmp/site && for z in /tmp/vllm-parts/vllm_*.zip; do "
        "unzip -q -o $z; done) && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "
        "/tmp/vllm-parts/*.whl && cd - && PYTHONPATH=/tmp/site python3 -c 'import vllm; print(vllm.__version__)'"
    )
    lines = [f"call {k}: carry {out}/part{k}: " + stage.format(folder=f"{out}/part{k}") for k in parts]
    lines.append(f"   then, in the same call: {finish}")
    (out / "CALLS.txt").write_text("\n".join(lines) + "\n")
    for k, size in enumerate(sizes, 1):
        print(f"part{k}: {size / 1e6:.1f} MB")
    print((out / "CALLS.txt").read_text())


if __name__ == "__main__":
    main()
