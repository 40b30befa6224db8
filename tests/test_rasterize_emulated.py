"""The CUDA sources of the GPU mask path, *executed on the CPU*: every kernel of
``rasterize_polygons.cu``, ``rle_decode.cu``, ``composite_occlusion.cu``, ``gather_masks.cu`` and
``paste_alpha.cu`` is compiled with g++ against a small CUDA emulation (one OS thread per CUDA
thread, ``__syncthreads`` and warp shuffles as barriers, atomics as ``std::atomic_ref``, shared
memory as statics, blocks run one after another), and the real CuPy launchers drive it through a
NumPy-backed stand-in for CuPy. So the launch configurations, argument lists, indexing, tile
logic, scans, reductions and the device compaction of ``copy_paste_batch_fused`` are compared
with the NumPy twins here, on a machine without a GPU, outputs poisoned.

What this cannot see: anything specific to real hardware (memory-model races between blocks
beyond the emulated atomics, misaligned vector loads, which x86 tolerates, occupancy and
performance). ``test_rasterize_gpu.py`` is the real thing; this is the safety net before it.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from decal.kernels import _cuda

KERNEL_DIR = Path(__file__).resolve().parents[1] / "kernels"

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (C++20) to emulate CUDA")

# --------------------------------------------------------------------------- the emulation

SHIM = r"""
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(x)
#define __shared__ static

namespace emu {
inline std::barrier<>* block_bar = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
inline thread_local int lane = 0, warp = 0;
inline unsigned long long xch[32][32];
}

inline void __syncthreads() { emu::block_bar->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T> T emu_shfl(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  unsigned long long slot = 0;
  std::memcpy(&slot, &v, sizeof(T));
  emu::xch[emu::warp][emu::lane] = slot;
  emu::warp_bar[emu::warp]->arrive_and_wait();
  T out = v;
  if (src >= 0 && src < 32) { slot = emu::xch[emu::warp][src]; std::memcpy(&out, &slot, sizeof(T)); }
  emu::warp_bar[emu::warp]->arrive_and_wait();
  return out;
}
template <class T> T __shfl_down_sync(unsigned, T v, int off) { return emu_shfl(v, emu::lane + off); }
template <class T> T __shfl_up_sync(unsigned, T v, int off) { return emu_shfl(v, emu::lane - off); }

inline unsigned atomicXor(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_xor(v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
  std::atomic_ref<unsigned> r(*p);
  unsigned old = r.load();
  while (old < v && !r.compare_exchange_weak(old, v)) {}
  return old;
}

inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline unsigned __vcmpne4(unsigned a, unsigned b) {
  unsigned r = 0;
  for (int i = 0; i < 4; ++i)
    if (((a >> (8 * i)) & 0xffu) != ((b >> (8 * i)) & 0xffu)) r |= 0xffu << (8 * i);
  return r;
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <class T> T __ldg(const T* p) { return *p; }
template <class A, class B> auto min(A a, B b) { return a < b ? a : b; }
template <class A, class B> auto max(A a, B b) { return a < b ? b : a; }
using std::ceil; using std::floor; using std::fmax; using std::fmin; using std::abs;

inline void emu_run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  const unsigned n = block.x * block.y * block.z;
  blockDim = block;
  gridDim = grid;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> bar((std::ptrdiff_t)n);
        emu::block_bar = &bar;
        emu::warp_bar.clear();
        for (unsigned w = 0; w < (n + 31) / 32; ++w)
          emu::warp_bar.emplace_back(new std::barrier<>((std::ptrdiff_t)std::min(32u, n - 32 * w)));
        std::vector<std::thread> threads;
        threads.reserve(n);
        for (unsigned t = 0; t < n; ++t)
          threads.emplace_back([&, t] {
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            blockIdx = {bx, by, bz};
            emu::lane = (int)(t & 31);
            emu::warp = (int)(t >> 5);
            body();
            emu::warp_bar[t >> 5]->arrive_and_drop();
            bar.arrive_and_drop();
          });
        for (auto& th : threads) th.join();
      }
}

template <class... P, std::size_t... I>
void emu_call(void (*f)(P...), void** args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}
template <class... P>
void emu_launch(void (*f)(P...), dim3 g, dim3 b, void** args) {
  emu_run_grid(g, b, [&] { emu_call(f, args, std::index_sequence_for<P...>{}); });
}
"""

#: Kernels of each source (the ones the launchers may pick).
KERNELS = {
    "rasterize_polygons.cu": ["rasterize_polygons_u8"],
    "rle_decode.cu": ["rle_decode_u8"],
    "composite_occlusion.cu": ["composite_occlusion_u8", "composite_occlusion_f32", "composite_occlusion_u8_x4",
                               "composite_occlusion_f32_x4"],
    "gather_masks.cu": ["gather_masks_u8", "gather_masks_u8x4"],
    "paste_alpha.cu": ["paste_alpha_u8", "paste_alpha_u8x4"],
}
SHARED_WORDS = 1 << 16


def _build(cu_name: str, build_dir: Path) -> ctypes.CDLL:
    source = (KERNEL_DIR / cu_name).read_text()
    headers = "".join(p.read_text() for p in sorted(KERNEL_DIR.glob("*.cuh")))
    extern = sorted(set(re.findall(r"extern __shared__ unsigned int (\w+)\[\];", source)))
    source = source.replace("extern __shared__", "extern")
    wrappers = [f"unsigned int {name}[{SHARED_WORDS}];" for name in extern]
    for k in KERNELS[cu_name]:
        wrappers.append(
            f'extern "C" void emu_{k}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
            f"unsigned bz, void** args) {{ emu_launch(&{k}, dim3{{gx, gy, gz}}, dim3{{bx, by, bz}}, args); }}"
        )
    text = SHIM + "\n" + source + "\n" + "\n".join(wrappers) + "\n"
    digest = hashlib.sha256((text + headers).encode()).hexdigest()[:16]
    lib = build_dir / f"{Path(cu_name).stem}-{digest}.so"
    if not lib.exists():
        src = build_dir / f"{Path(cu_name).stem}-{digest}.cpp"
        src.write_text(text)
        cmd = ["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
               f"-I{KERNEL_DIR}", "-o", str(lib), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    return ctypes.CDLL(str(lib))


class EmulatedKernel:
    """Callable like a ``cupy.RawKernel``: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, lib: ctypes.CDLL, name: str) -> None:
        self.fn = getattr(lib, f"emu_{name}")
        self.fn.restype = None
        self.name = name

    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        assert shared_mem <= 4 * SHARED_WORDS
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        assert all(int(g) >= 1 for g in grid), grid
        assert all(g <= 65535 for g in grid[1:]), f"{self.name}: grid {grid} beyond CUDA's y/z limit"
        assert np.prod(block) <= 1024
        holders = []
        for a in args:
            if isinstance(a, np.ndarray):
                holders.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.int32):
                holders.append(ctypes.c_int32(int(a)))
            elif isinstance(a, np.int64):
                holders.append(ctypes.c_int64(int(a)))
            elif isinstance(a, np.float32):
                holders.append(ctypes.c_float(float(a)))
            else:
                raise TypeError(f"{self.name}: kernel argument of type {type(a).__name__} (CuPy would need a NumPy scalar)")
        argv = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        self.fn(*(ctypes.c_uint(int(v)) for v in grid + block), argv)


# --------------------------------------------------------------------------- a CuPy stand-in


class DevArray(np.ndarray):
    """Host memory posing as a CuPy array (``.data.ptr``, ``.get()``)."""

    @property
    def data(self):  # noqa: D401 - mimics cupy.ndarray.data (a MemoryPointer)
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def get(self, stream=None) -> np.ndarray:
        return np.array(self.view(np.ndarray), copy=True)


def _dev(x):
    return x.view(DevArray) if isinstance(x, np.ndarray) else x


def fake_cupy() -> types.ModuleType:
    cp = types.ModuleType("cupy")
    cp.ndarray = DevArray
    for name in ("uint8", "int32", "int64", "uint32", "float32", "float64", "bool_"):
        setattr(cp, name, getattr(np, name))

    def asarray(a, dtype=None, **_):
        if isinstance(a, DevArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return _dev(np.array(a, dtype=dtype, copy=True))

    cp.asarray = asarray
    cp.array = asarray
    cp.ascontiguousarray = lambda a, dtype=None: _dev(np.ascontiguousarray(a, dtype=dtype))
    for name in ("zeros", "empty", "ones", "full", "arange", "concatenate", "stack", "where", "cumsum", "abs",
                 "all", "any", "repeat", "bincount", "flatnonzero", "zeros_like", "empty_like"):
        setattr(cp, name, (lambda f: lambda *a, **k: _dev(f(*a, **k)))(getattr(np, name)))
    device = types.SimpleNamespace(id=0)
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cp.cuda = types.SimpleNamespace(
        Device=lambda *a: device,
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"multiProcessorCount": 2}, getDeviceCount=lambda: 1),
        get_current_stream=lambda: stream,
    )
    return cp


@pytest.fixture(scope="module")
def emulated_libs(tmp_path_factory):
    build = tmp_path_factory.mktemp("cuda_emu")
    return {cu: _build(cu, build) for cu in KERNELS}


@pytest.fixture
def emulated(emulated_libs, monkeypatch):
    """CuPy replaced by the stand-in and every listed kernel by its emulation; poison on."""
    cp = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setenv("DECAL_POISON", "1")

    def get_kernel(cu_name: str, kernel_name: str):
        assert kernel_name in KERNELS[cu_name], f"{cu_name}:{kernel_name} not emulated"
        return EmulatedKernel(emulated_libs[cu_name], kernel_name)

    monkeypatch.setattr(_cuda, "get_kernel", get_kernel)
    return cp


# --------------------------------------------------------------------------- tests

from decal.kernels.composite_occlusion import composite_occlusion_cupy, composite_occlusion_numpy  # noqa: E402
from decal.kernels.copy_paste import CopyPasteParams  # noqa: E402
from decal.kernels.copy_paste_fused import copy_paste_batch_fused  # noqa: E402
from decal.kernels.gather_masks import gather_masks_cupy, gather_masks_numpy  # noqa: E402
from decal.kernels.instance_masks import build_descriptors, rasterize_instances  # noqa: E402
from decal.kernels.mask_geometry import sample_geometry  # noqa: E402

from raster_factory import FIELDS, random_batch, random_case, random_polygon, random_rle  # noqa: E402


def _host(x):
    return x.get() if isinstance(x, DevArray) else x


@pytest.mark.parametrize("side,subpixel", [(1, False), (33, False), (45, True)])
def test_emulated_rasterisers_equal_twins(emulated, side, subpixel) -> None:
    rng = np.random.default_rng(side)
    samples, geometries = random_batch(rng, 3, side, max_instances=3)
    samples[1].append(("poly", [random_polygon(rng, geometries[1].src_h, geometries[1].src_w, 4),
                                random_polygon(rng, geometries[1].src_h, geometries[1].src_w, 0)]))  # 2 parts
    samples[2].append(("rle", random_rle(rng, geometries[2].src_h, geometries[2].src_w)))
    desc, _ = build_descriptors(samples, geometries, subpixel=subpixel)
    ref = rasterize_instances(desc)
    got = rasterize_instances(desc.to_device())
    assert isinstance(got[0], DevArray)
    for name, g, r in zip(("masks", "areas", "boxes"), got, ref):
        np.testing.assert_array_equal(_host(g), r, err_msg=name)


def test_emulated_rasteriser_border_objects_and_empty_rows(emulated) -> None:
    g = sample_geometry(20, 30, 1.4, 0.2, 0.9, 1, 40)
    samples = [[("poly", [np.array([[0.0, 0.0], [30.0, 0.0], [30.0, 20.0], [0.0, 20.0]])]),  # whole image
                ("poly", [np.array([[-9.0, -9.0], [-5.0, -9.0], [-7.0, -4.0]])]),  # outside: empty
                ("rle", np.zeros(0, np.int32))]]  # empty RLE
    desc, _ = build_descriptors(samples, [g])
    got = rasterize_instances(desc.to_device())
    for g_, r in zip(got, rasterize_instances(desc)):
        np.testing.assert_array_equal(_host(g_), r)
    assert _host(got[1]).tolist()[1:] == [0, 0]


@pytest.mark.parametrize("alpha_kind", ["hard_same", "soft"])
def test_emulated_composite_occlusion(emulated, alpha_kind) -> None:
    rng = np.random.default_rng(7)
    b, h, w = 2, 13, 20  # W % 4 == 0: the word path
    images, masks, offsets, _, _ = random_case(rng, b, h, w, max_inst=3)
    hard = (rng.random((b, h, w)) < 0.4).astype(np.uint8)
    hard[0] = 1
    alpha = hard if alpha_kind == "hard_same" else rng.random((b, h, w)).astype(np.float32)
    partner = np.array([1, 0])
    for width in (w, w - 1):  # and the byte path
        im, ms, hd = images[:, :, :width].copy(), masks[:, :, :width].copy(), hard[:, :, :width].copy()
        al = hd if alpha_kind == "hard_same" else alpha[:, :, :width].copy()
        got = composite_occlusion_cupy(_dev(im), _dev(im), partner, _dev(al), _dev(hd), _dev(ms), offsets)
        ref = composite_occlusion_numpy(im, im, partner, al, hd, ms, offsets)
        for g_, r in zip(got, ref):
            np.testing.assert_array_equal(_host(g_), r)


def test_emulated_gather_masks(emulated) -> None:
    rng = np.random.default_rng(3)
    for h, w in ((6, 8), (5, 7)):
        masks = (rng.random((4, h, w)) < 0.5).astype(np.uint8)
        hard = (rng.random((2, h, w)) < 0.5).astype(np.uint8)
        src, clear = np.array([3, 0, 0, 2]), np.array([-1, 1, 0, -1])
        got = gather_masks_cupy(_dev(masks), _dev(hard), src, clear)
        np.testing.assert_array_equal(_host(got), gather_masks_numpy(masks, hard, src, clear))


def test_emulated_copy_paste_fused_end_to_end(emulated) -> None:
    """Rasterise then the fused step (paste_alpha, composite_occlusion, device compaction,
    gather) through the emulated kernels, against the same on the host."""
    rng = np.random.default_rng(11)
    side = 24
    samples, geometries = random_batch(rng, 3, side, max_instances=4)
    desc, _ = build_descriptors(samples, geometries)
    m = desc.num_instances
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in samples])]).astype(np.int64)
    images = rng.integers(0, 256, (3, side, side, 3), dtype=np.uint8)
    labels, crowd = rng.integers(1, 5, m), np.zeros(m, bool)
    params = CopyPasteParams(max_num_pasted=4, mask_occluded_thr=5, bbox_occluded_thr=2.0)
    hm, ha, hb = rasterize_instances(desc)
    seed = next(s for s in range(100) if copy_paste_batch_fused(
        images, hm, ha, hb, offsets, labels, crowd, params, np.random.default_rng(s)).plan.paste_indices.size)
    ref = copy_paste_batch_fused(images, hm, ha, hb, offsets, labels, crowd, params, np.random.default_rng(seed))
    dm, da, db = rasterize_instances(desc.to_device())
    got = copy_paste_batch_fused(_dev(images), dm, da, db, offsets, labels, crowd, params, np.random.default_rng(seed))
    for f in FIELDS:
        np.testing.assert_array_equal(_host(getattr(got, f)), getattr(ref, f), err_msg=f)


def step_inputs(rng: np.random.Generator, side: int) -> tuple:
    """A random batch of 3 samples as a descriptor step takes it (NumPy): its descriptors,
    the descriptor columns, images, labels, crowd flags (none) and positions."""
    from decal.dali_pipes.core.step_io import DESCRIPTOR_COLUMNS

    samples, geometries = random_batch(rng, 3, side, max_instances=4)
    desc, bounds = build_descriptors(samples, geometries)
    pieces = desc.split(bounds)
    columns = [[piece[name] for piece in pieces] for name in DESCRIPTOR_COLUMNS]
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in samples]
    labels = [rng.integers(1, 9, len(s)).astype(np.int64) for s in samples]
    crowd = [np.zeros(len(s), np.uint8) for s in samples]
    positions = [np.array([4, 0, 0, 7, 3], np.int64) for _ in samples]
    return desc, columns, images, labels, crowd, positions


def test_emulated_pipeline_step_gpu_branch(emulated) -> None:
    """The python_function body of the GPU-mask pipeline, fed per-sample "device" arrays as
    DALI would (its CuPy branch: one metadata transfer, device compaction, one upload of the
    small outputs), against the same call with NumPy arrays (its CPU branch)."""
    from decal.dali_pipes.copy_paste.gpu_masks import GpuMaskCopyPasteStep

    rng = np.random.default_rng(21)
    _, columns, images, labels, crowd, positions = step_inputs(rng, 20)
    step = GpuMaskCopyPasteStep(CopyPasteParams(max_num_pasted=3, mask_occluded_thr=4, bbox_occluded_thr=1.0))
    ref = step(images, *columns, labels, crowd, positions)
    dev = [[_dev(x) for x in col] for col in (images, *columns, labels, crowd, positions)]
    got = step(*dev)
    assert len(got) == len(ref) == 7
    for g_col, r_col in zip(got, ref):
        assert len(g_col) == len(r_col) == 3
        for g_, r in zip(g_col, r_col):
            assert isinstance(g_, DevArray)
            assert g_.dtype == r.dtype and g_.shape == r.shape
            np.testing.assert_array_equal(_host(g_), r)


def test_step_inputs_reach_the_host_in_one_copy(emulated, monkeypatch) -> None:
    """Both input forms of a paste step become the batched form with ONE device-to-host copy
    per batch on the device path: labels, crowd flags and the position row (host masks,
    ``stack_batch``), plus the areas (descriptors, ``descriptor_batch``); the values are those
    of the NumPy path."""
    from decal.dali_pipes.core.step_io import descriptor_batch, stack_batch

    emulated.moveaxis = lambda *a, **k: _dev(np.moveaxis(*a, **k))  # stack_batch's HWC → CHW
    copies: list[tuple[int, ...]] = []
    get = DevArray.get
    monkeypatch.setattr(DevArray, "get", lambda self, stream=None: copies.append(self.shape) or get(self, stream))
    rng = np.random.default_rng(5)
    side = 16
    desc, columns, images, labels, _, positions = step_inputs(rng, side)
    crowd = [(rng.uniform(size=len(x)) < 0.5).astype(np.uint8) for x in labels]
    masks, _, _ = rasterize_instances(desc)
    offsets = np.cumsum([0] + [len(x) for x in labels])
    host_masks = [np.concatenate([np.moveaxis(masks[offsets[b] : offsets[b + 1]], 0, 2), np.zeros((side, side, 1), np.uint8)], 2)
                  for b in range(len(labels))]  # fmt: skip

    want = stack_batch(images, host_masks, labels, crowd, positions)
    want_desc = descriptor_batch(images, *columns, labels, crowd, positions)
    assert not copies  # NumPy inputs: nothing to copy
    dev = lambda col: [_dev(x) for x in col]  # noqa: E731
    got = stack_batch(dev(images), dev(host_masks), dev(labels), dev(crowd), dev(positions))
    assert len(copies) == 1
    got_desc = descriptor_batch(dev(images), *[dev(c) for c in columns], dev(labels), dev(crowd), dev(positions))
    assert len(copies) == 2
    for a, b in ((got, want), (got_desc, want_desc)):
        assert isinstance(a.masks, DevArray) and isinstance(a.images, DevArray)
        np.testing.assert_array_equal(_host(a.masks), b.masks)
        for name in ("offsets", "labels", "iscrowd", "position"):
            value = getattr(a, name)
            assert type(value) is np.ndarray, name
            np.testing.assert_array_equal(value, getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(got_desc.areas_host, want_desc.areas_host)
