"""The compiled kernels of multi-scale deformable attention: built on first use with
torch.utils.cpp_extension (ninja from PyPI), cached per torch and Python version, never at install.

A finished build is also kept under a key of what it was made from (the sources, torch's build, Python's
extension ABI, the flags; the toolkit for CUDA), and loaded from there without ninja: a new virtual
environment (torch's include paths are in ninja's command, so ninja would compile again) or another ninja
(versions hash their logs differently) then costs nothing.

Two extensions: csrc/ms_deform_attn_cpu.cpp (any C++ compiler) and csrc/ms_deform_attn_cuda.cu (needs
nvcc, a CUDA toolkit of the major version torch was built with). Each is checked against the PyTorch
reference on a small random problem the first time it is used; any failure (no compiler, no toolkit, a
build error, a disagreement) is logged in one line and the reference keeps working. Without a C++ compiler
torch's build is never started; during a build torch's own log lines go to gdino's log at DEBUG.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shlex
import shutil
import sys
import sysconfig
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .reference import ms_deform_attn_reference

log = logging.getLogger("gdino")
INSTALL_COMPILER = "xcode-select --install" if sys.platform == "darwin" else "apt-get install g++"


class NoCompilerError(RuntimeError):
    """No C++ compiler to build a kernel with."""


def find_cxx() -> str | None:
    """The C++ compiler torch's build would run, as a path: $CXX, else c++ (cl on Windows), the choice of
    torch.utils.cpp_extension.get_cxx_compiler; None if it is not there."""
    command = os.environ.get("CXX") or ("cl" if sys.platform == "win32" else "c++")
    words = shlex.split(command) if sys.platform != "win32" else [command]
    return shutil.which(words[0]) if words else None


def _compiler_wanted() -> str:
    cxx = os.environ.get("CXX")
    return f"CXX={cxx!r} is not an executable on PATH" if cxx else "no c++ on PATH"


@contextmanager
def _torch_logs_to_debug() -> Iterator[None]:
    """torch's build logs blocks of its own at WARNING (a compiler-compatibility banner, a CUDA_HOME guess on
    import); while we build they go to gdino's log at DEBUG, and our one line says what happened."""
    torch_log = logging.getLogger("torch.utils.cpp_extension")

    def divert(record: logging.LogRecord) -> bool:
        log.debug("gdino: torch's build said: %s", record.getMessage().strip())
        return False

    torch_log.addFilter(divert)
    try:
        yield
    finally:
        torch_log.removeFilter(divert)


def _find_csrc() -> Path:
    installed = Path(__file__).resolve().parents[1] / "_csrc"  # a wheel carries csrc/ as gdino/_csrc
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "csrc"  # the repository


CSRC = _find_csrc()
SOURCES = {"cpu": "ms_deform_attn_cpu.cpp", "cuda": "ms_deform_attn_cuda.cu"}
_lock = threading.Lock()
_state: dict[str, dict] = {kind: {"tried": False, "module": None, "error": None} for kind in SOURCES}


def _simd_flags() -> tuple[str, list[str]]:
    """8-wide float math where this CPU has it (the build is for this machine; the cache is keyed by it)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512") and sys.platform.startswith("linux"):
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def cuda_home() -> str | None:
    """The CUDA toolkit to build with: $CUDA_HOME / $CUDA_PATH, else the one whose nvcc is on PATH, else
    /usr/local/cuda. (torch guesses the folder two levels above `which nvcc`, wrong for a wrapper script.)"""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if candidate:
            return candidate
    roots = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(Path(os.path.realpath(nvcc)).parents[1])
    roots.append(Path("/usr/local/cuda"))
    for root in roots:
        if (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda_runtime.h").is_file():
            return str(root)
    return None


def _cuda_arch_tag() -> str:
    """The GPU architectures the CUDA build targets: $TORCH_CUDA_ARCH_LIST, else the GPUs present."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs and torch.cuda.is_available():
        archs = ";".join(sorted({"{}.{}".format(*torch.cuda.get_device_capability(i))
                                 for i in range(torch.cuda.device_count())}))
    return "sm" + "-".join((archs or "default").replace(".", "").replace("+PTX", "ptx").replace(" ", ";").split(";"))


def build_dir(kind: str = "cpu") -> Path:
    root = Path(os.environ.get("GDINO_CACHE", Path.home() / ".cache" / "gdino"))
    tag = f"torch{torch.__version__.replace('+', '_')}-py{sys.version_info.major}{sys.version_info.minor}"
    tag += f"-{_simd_flags()[0]}" if kind == "cpu" else f"-cuda{torch.version.cuda}-{_cuda_arch_tag()}"
    return root / "kernels" / tag


def build(kind: str):
    """Compile (or load from the cache) one kernel, "cpu" or "cuda"; raises on any failure. No check."""
    source = CSRC / SOURCES[kind]
    if not source.is_file():
        raise FileNotFoundError(f"{source} is not there (the C++ sources are missing from this install)")
    flags = {"extra_cflags": ["-O3", *_simd_flags()[1]]}
    home = None
    if kind == "cuda":
        if torch.version.cuda is None:
            raise RuntimeError(f"this torch ({torch.__version__}) is not a CUDA build")
        home = cuda_home()
        if home is None:
            raise RuntimeError("no CUDA toolkit (nvcc) found; set CUDA_HOME to one")
        flags = {"extra_cflags": ["-O3"], "extra_cuda_cflags": ["-O3"]}
    directory = build_dir(kind)
    key = _content_key(kind, source, flags, home)
    kept = directory / "by-content" / key
    built = sorted(p for p in kept.iterdir() if not p.name.startswith(".")) if kept.is_dir() else []
    if built:  # this very build was made before (in any virtual environment): no compiler, no ninja
        return _import_built(built[0])
    cached = any(directory.glob("*.so"))
    if find_cxx() is None and not cached:  # (a cached build loads without one)
        raise NoCompilerError(f"no C++ compiler found ({_compiler_wanted()})")
    directory.mkdir(parents=True, exist_ok=True)
    source = _stable_copy(source, directory / "src")
    if not cached:
        log.warning("gdino: compiling the deformable-attention %s kernel (first use only, about a minute; cached in %s)",
                    kind.upper(), directory)
    with _torch_logs_to_debug():
        from torch.utils import cpp_extension

        if home is not None:
            cpp_extension.CUDA_HOME = home  # torch reads this module global when it builds
        module = cpp_extension.load(name=f"gdino_msda_{kind}", sources=[str(source)],
                                    extra_include_paths=[str(source.parent)], build_directory=str(directory),
                                    verbose=False, **flags)
    if _content_key(kind, source, flags, home) == key:  # (not if another checkout's sources came in meanwhile)
        _keep(Path(module.__file__), kept)
    return module


def _content_key(kind: str, source: Path, flags: dict, cuda_home: str | None) -> str:
    """What a built kernel depends on, hashed: the source and the headers beside it, torch's build (version and
    commit: the ABI the module links against), Python's extension ABI, the flags, and for CUDA the target
    architectures and the toolkit. Not paths: the same build from another virtual environment is the same."""
    h = hashlib.sha256()
    parts = [kind, torch.__version__, torch.version.git_version, str(torch.version.cuda), sys.version,
             str(sysconfig.get_config_var("EXT_SUFFIX")), repr(sorted(flags.items()))]
    if kind == "cuda":
        toolkit = Path(os.path.realpath(cuda_home or ""))
        version = toolkit / "version.json"
        parts += [_cuda_arch_tag(), str(toolkit), version.read_text() if version.is_file() else ""]
    for part in parts:
        h.update(part.encode() + b"\0")
    for file in [source, *sorted(source.parent.glob("*.h"))]:
        h.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def _keep(built: Path, kept: Path) -> None:
    """A copy of the finished module under its content key, whole (written aside, then renamed into place)."""
    try:
        kept.mkdir(parents=True, exist_ok=True)
        tmp = kept / f".{built.name}.{os.getpid()}.tmp"
        shutil.copyfile(built, tmp)
        os.replace(tmp, kept / built.name)
    except OSError as err:  # a read-only cache: the next start builds through ninja again, nothing worse
        log.debug("gdino: could not keep the built kernel in %s: %s", kept, err)


def _import_built(path: Path):
    """Import a built extension module from its file (its name is the file's: the module's init function)."""
    spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not an extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stable_copy(source: Path, folder: Path) -> Path:
    """`source` and the headers beside it, copied into the build's own folder where their content differs: the
    build then names the same paths from every checkout of the same sources, so ninja does not compile again
    because the sources moved (a second clone beside the first). A build from another torch install (a new
    virtual environment) still compiles again: torch's include paths are part of the command."""
    folder.mkdir(exist_ok=True)
    for file in [source, *sorted(source.parent.glob("*.h"))]:
        target = folder / file.name
        data = file.read_bytes()
        if not target.is_file() or target.read_bytes() != data:
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # whole, for a build in another process that reads it meanwhile
    return folder / source.name


def kernel(kind: str):
    """The compiled module for "cpu" or "cuda", built and checked the first time; None if it cannot be had."""
    state = _state[kind]
    if state["tried"]:
        return state["module"]
    with _lock:
        if state["tried"]:
            return state["module"]
        try:
            module = build(kind)
            self_check(module, "cuda" if kind == "cuda" else "cpu")
            state["module"] = module
        except NoCompilerError as err:
            state["error"] = str(err)
            log.warning("gdino: %s to build the deformable-attention %s kernel; the PyTorch reference runs instead "
                        "(slower). For the fast kernel install a C++ compiler, e.g. `%s`", err, kind.upper(),
                        INSTALL_COMPILER)
        except Exception as err:  # no toolkit, a build error, a wrong answer: the reference still works
            message = str(err).strip()
            state["error"] = f"{type(err).__name__}: {message.splitlines()[-1] if message else ''}"
            log.warning("gdino: the compiled deformable-attention %s kernel is unavailable (%s); using the PyTorch "
                        "reference (slower)", kind.upper(), state["error"])
            if kind == "cuda" and _device_fault(err):  # CUDA cannot recover from these in this process
                raise RuntimeError(f"the CUDA kernel faulted on its first-use check ({state['error']}); this "
                                   "process's CUDA context is lost. Restart with GDINO_MSDA=reference and report "
                                   "the error") from err
        finally:
            state["tried"] = True
    return state["module"]


def _device_fault(err: Exception) -> bool:
    text = str(err)
    return any(s in text for s in ("illegal memory access", "unspecified launch failure", "device-side assert",
                                   "misaligned address", "illegal instruction"))


def prepare_in_background() -> threading.Thread:
    """Start building the kernels now (the CPU one, and the CUDA one where there is a GPU), so that the first
    detection does not wait for them (the app)."""
    # not CUDA on a ZeroGPU Space: the main process there must not initialize CUDA (the check would);
    # a GPU call builds it on first use instead
    zero_gpu = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")
    kinds = ["cpu", "cuda"] if torch.cuda.is_available() and not zero_gpu else ["cpu"]
    thread = threading.Thread(target=lambda: [kernel(kind) for kind in kinds], name="gdino-kernel-build", daemon=True)
    thread.start()
    return thread


def _level_tensors(spatial_shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 2) int64 (h, w) and (L,) start offsets, on the CPU: the kernels check them there and copy them
    to the value's device themselves (no GPU sync)."""
    shapes = torch.tensor(spatial_shapes, dtype=torch.int64)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return shapes, starts


class _Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module, value, shapes, starts, sampling_locations, attention_weights):
        ctx.module = module
        ctx.save_for_backward(value, shapes, starts, sampling_locations, attention_weights)
        return module.forward(value, shapes, starts, sampling_locations, attention_weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.module.backward(value, shapes, starts, locations, weights,
                                                                      grad_output.contiguous())
        return None, grad_value, None, None, grad_locations, grad_weights


def run(module, value, spatial_shapes, sampling_locations, attention_weights) -> torch.Tensor:
    """The compiled op, differentiable. Shapes as in `gdino.ops.ms_deform_attn`; locations and weights in
    float32 (float64 for a float64 value), value in any dtype its kernel takes."""
    shapes, starts = _level_tensors(spatial_shapes)
    return _Function.apply(module, value, shapes, starts, sampling_locations, attention_weights)


def self_check(module, device: str) -> None:
    """Forward and backward on a small random problem (borders and outside points included) against the
    reference in float32; raises if they differ. Milliseconds; guards users against a miscompiled kernel."""
    with torch.inference_mode(False), torch.enable_grad():  # the first use may well come from inference code
        g = torch.Generator().manual_seed(0)
        shapes = [(6, 7), (3, 4)]
        value = torch.randn(2, sum(h * w for h, w in shapes), 2, 8, generator=g)
        loc = torch.rand(2, 5, 2, len(shapes), 3, 2, generator=g) * 1.4 - 0.2
        weights = torch.rand(2, 5, 2, len(shapes), 3, generator=g)
        grad = torch.randn(2, 5, 16, generator=g)
        inputs = [t.to(device).requires_grad_(True) for t in (value, loc, weights)]
        reference = [t.detach().clone().requires_grad_(True) for t in (value, loc, weights)]
        out = run(module, inputs[0], shapes, inputs[1], inputs[2])
        out.backward(grad.to(device))
        expected = ms_deform_attn_reference(reference[0], shapes, reference[1], reference[2])
        expected.backward(grad)
    pairs = [("output", out, expected)]
    pairs += [(f"{name} gradient", a.grad, b.grad) for name, a, b in zip(("value", "location", "weight"), inputs, reference,
                                                                           strict=True)]
    for name, got, want in pairs:
        diff = (got.detach().cpu() - want.detach()).abs().max().item()
        if not diff <= 1e-4 * (1 + want.abs().max().item()):
            raise RuntimeError(f"the kernel's {name} differs from the reference by {diff:.3g} on {device}")
