"""`cpp`: zoo-run, a CMake project under ``export/cpp/`` built against the libtorch inside
the installed torch wheel. It runs ``.torchscript`` (``torch::jit::load``) and ``.pt2``
(AOTInductor's ``AOTIModelPackageLoader``), on the CPU or CUDA."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from zoo.errors import ZooError
from zoo.export.runtimes._native import EXPORT_DIR, NativeRuntime, build_cache, first_error, hash_files, publish, run_logged

SOURCE = EXPORT_DIR / "cpp"


def _compiler() -> str | None:
    env = os.environ.get("CXX")
    if env:
        return shutil.which(env.split()[0])
    return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


def _sources() -> list[Path]:
    # Only the project's own sources: a developer's build tree under cpp/ must not change the key.
    return [SOURCE / "CMakeLists.txt", *SOURCE.glob("*.[ch]pp"), *SOURCE.glob("examples/*.[ch]pp")]


def build_dir() -> Path:
    """Where zoo-run for these sources and this torch lives (built or not)."""
    import torch.utils

    torch_root = Path(torch.utils.cmake_prefix_path).parents[1]
    # The recipe (this module: what is built and kept) is part of the key, beside the sources.
    recipe = Path(__file__).read_bytes().decode(errors="replace")
    return build_cache() / f"zoo-run-{hash_files(SOURCE, _sources(), [torch.__version__, str(torch_root), recipe])}"


class Cpp(NativeRuntime):
    name = "cpp"
    summary = "zoo-run: libtorch C++ (TorchScript, .pt2)"
    formats = ("torchscript", "pt2")
    order = 10
    prefix = "zoo-run:"

    def available(self) -> tuple[bool, str]:
        if (build_dir() / "zoo-run").is_file():
            return True, f"zoo-run built in {build_dir()}"
        if shutil.which("cmake") is None:
            return False, "cmake not found (install CMake >= 3.18 to build zoo-run)"
        if _compiler() is None:
            return False, "no C++ compiler found (install g++ or clang++, or set CXX)"
        import torch.utils

        if not (Path(torch.utils.cmake_prefix_path) / "Torch" / "TorchConfig.cmake").is_file():
            return False, f"the installed torch has no libtorch CMake files under {torch.utils.cmake_prefix_path}"
        return True, "cmake, a C++ compiler and libtorch found"

    def command(self) -> list[str]:
        return [str(self.runner())]

    def runner(self) -> Path:
        """Path of the `zoo-run` executable, built once per source and torch version."""
        import torch.utils

        final = build_dir()
        exe = final / "zoo-run"
        if exe.is_file():
            return exe
        self.require()
        key = final.name.removeprefix("zoo-run-")
        cache = final.parent
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".zoo-run-{key}-", dir=cache))
        log = tmp / "build.log"
        cmake_build = tmp / "cmake-build"
        configure = [
            "cmake",
            "-S",
            str(SOURCE),
            "-B",
            str(cmake_build),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        ]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        build = ["cmake", "--build", str(cmake_build), "--parallel", str(os.cpu_count() or 2)]
        for cmd in (configure, build):
            if run_logged(cmd, log).returncode != 0:
                kept = cache / f"zoo-run-{key}.failed.log"
                shutil.copyfile(log, kept)
                shutil.rmtree(tmp, ignore_errors=True)
                raise ZooError(f"building zoo-run failed: {first_error(kept)} (full log: {kept})")
        for program in ("zoo-run", "generate_image", "generate_text"):
            if (cmake_build / program).is_file():
                shutil.copy2(cmake_build / program, tmp / program)
        # The executables find libtorch through an absolute rpath, so the object files can go.
        shutil.rmtree(cmake_build, ignore_errors=True)
        publish(tmp, final)
        return exe


runtime = Cpp()
