"""Write two tiny wheels into DIR: `vllm` (stands in for the image's non-editable vLLM) and
`vllm-stub-dependency`, which `vllm` requires. Dockerfile.dev must remove the first and keep the second."""

import base64
import hashlib
import sys
import zipfile
from pathlib import Path


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(out: Path, dist: str, module: str, requires: list[str]) -> None:
    version = "0.0.1"
    info = f"{dist.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": "\n".join(
            ["Metadata-Version: 2.1", f"Name: {dist}", f"Version: {version}"]
            + [f"Requires-Dist: {r}" for r in requires]
        ).encode() + b"\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: workbench-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(out / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    write_wheel(target, "vllm", "vllm", ["vllm-stub-dependency"])
    write_wheel(target, "vllm-stub-dependency", "vllm_stub_dependency", [])
