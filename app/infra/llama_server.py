"""`python -m app.infra.llama_server ARGS`: llama.cpp's OpenAI-compatible server
(`python -m llama_cpp.server ARGS`), with its extra weight layouts off on CPUs that report AMX.

llama.cpp moves weights into "extra buffer types" where the CPU allows: AMX tiles, and
repacked layouts for AVX-512. Its AMX matrix multiply segfaults on machines whose kernel or
sandbox reports AMX in /proc/cpuinfo but does not let a process use the tiles (seen here: the
first completion killed the server). llama-cpp-python does not expose the switch
(`use_extra_bufts` in the model parameters), so the default parameters are wrapped before the
server loads the model. Elsewhere the server runs exactly as llama-cpp-python ships it."""

from __future__ import annotations

import runpy
from pathlib import Path


def reports_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        return "amx_tile" in cpuinfo.read_text().split()
    except OSError:
        return False


def without_extra_buffers() -> None:
    from llama_cpp import llama_cpp as low

    default = low.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params


if __name__ == "__main__":
    if reports_amx():
        without_extra_buffers()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
