"""The embedded LLM server's launcher: llama.cpp's extra weight layouts (whose AMX path
segfaults where a CPU reports AMX but the process may not use it) are off exactly on such
CPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.infra.llama_server import reports_amx


def test_amx_is_read_from_the_cpu_flags(tmp_path: Path):
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n")
    plain = tmp_path / "plain"
    plain.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert reports_amx(amx) and not reports_amx(plain)
    assert not reports_amx(tmp_path / "missing")


def test_without_extra_buffers_the_model_parameters_say_so():
    code = (
        "from llama_cpp import llama_cpp as low\n"
        "from app.infra.llama_server import without_extra_buffers\n"
        "before = low.llama_model_default_params().use_extra_bufts\n"
        "without_extra_buffers()\n"
        "print(before, low.llama_model_default_params().use_extra_bufts)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
