// Shared device code of the mask rasterisers (rasterize_polygons.cu, rle_decode.cu): the
// output-row lookup through a sample's geometry table, the column-parity scan, and the
// expansion of a 32-column tile to uint8 masks fused with the instance's area and tight box.
// No standard headers, so NVRTC (CuPy) and nvcc both compile it.
//
// Model (see rasterize_polygons.py for the derivation). A source raster (the instance at its
// original h×w, as pycocotools would draw it) is described column by column by *toggle rows*:
// pixel (r, c) is inside iff an odd number of column c's toggles lie at rows <= r. Every
// column has an even number of toggles (rows in [0, h]). The output pixel (Y, X) shows the
// source pixel (rows[Y], cols[X]) of its sample's geometry table (nearest-neighbour resize,
// crop/pad, flip; -1 = padding). Because rows[] never decreases over the contiguous valid run
// [y0, y1), a source toggle at row r becomes an output toggle at
//   T = y0 + #{valid Y : rows[Y] < r}      (= y1 when no valid row reaches r),
// and the prefix XOR of the output toggles down each output column reproduces exactly
// raster[rows[Y], cols[X]] on valid rows and 0 on padded ones.
//
// Block work unit: one instance × one tile of 32 output columns (bit i of a 32-bit word =
// column X0 + i). Toggles and column states live in shared memory, H words.
//
// Geometry table t (int32, stride H + W + 4): rows[H] | cols[W] | src_h, src_w, y0, y1.
#pragma once

#include "box_reduce.cuh"

namespace decal {
namespace raster {

constexpr int TILE = 32;
constexpr int THREADS = 256;  // 8 warps; every kernel using this header launches 256 threads

struct Table {
  const int* rows;  // [H]
  const int* cols;  // [W]
  int src_h, src_w, y0, y1;
};

__device__ __forceinline__ Table load_table(const int* __restrict__ tables, int t, int H, int W) {
  const int* base = tables + (long long)t * (H + W + 4);
  Table tb;
  tb.rows = base;
  tb.cols = base + H;
  tb.src_h = base[H + W];
  tb.src_w = base[H + W + 1];
  tb.y0 = base[H + W + 2];
  tb.y1 = base[H + W + 3];
  return tb;
}

// Output row of a toggle at source row r (0 <= r <= src_h): lower bound of r over the valid
// rows, y1 when none. Rows >= H are dropped by the caller.
__device__ __forceinline__ int output_row(const Table& tb, int r) {
  int lo = tb.y0, hi = tb.y1;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (__ldg(tb.rows + mid) >= r) hi = mid; else lo = mid + 1;
  }
  return lo;
}

// Toggle column bit `bit` at output row T (dropped when T >= H).
__device__ __forceinline__ void toggle(unsigned int* tog, int T, int H, unsigned int bit) {
  if (T < H) atomicXor(tog + T, bit);
}

// In-place inclusive prefix XOR of words[0..H) (the column states), whole block. Ends with
// __syncthreads(). Each thread scans a contiguous chunk; chunk parities are combined with a
// warp-shuffle scan.
__device__ __forceinline__ void block_xor_scan(unsigned int* words, int H) {
  __shared__ unsigned int warp_tot[THREADS / 32];
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int chunk = (H + THREADS - 1) / THREADS;
  const int begin = min(H, tid * chunk), end = min(H, begin + chunk);
  unsigned int local = 0u;
  for (int y = begin; y < end; ++y) local ^= words[y];
  unsigned int incl = local;  // inclusive scan within the warp
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned int v = __shfl_up_sync(FULL_WARP, incl, off);
    if (lane >= off) incl ^= v;
  }
  if (lane == 31) warp_tot[warp] = incl;
  __syncthreads();
  unsigned int before = incl ^ local;  // exclusive within the warp
  for (int w = 0; w < warp; ++w) before ^= warp_tot[w];
  unsigned int run = before;
  for (int y = begin; y < end; ++y) {
    run ^= words[y];
    words[y] = run;
  }
  __syncthreads();
}

// Expand the tile's column states to uint8 (0/1) in masks[m] and merge the tile's pixel count
// and tight box into instance m's workspace; the last tile block of m writes areas[m] and
// boxes[m] (box_reduce.cuh). Every thread of the block must call this.
__device__ __forceinline__ void write_tile(const unsigned int* state, long long m, int H, int W,
                                           int X0, unsigned char* __restrict__ masks,
                                           unsigned int* __restrict__ ws,
                                           long long* __restrict__ areas,
                                           float* __restrict__ boxes) {
  const long long plane = (long long)H * W;
  unsigned char* out = masks + m * plane;
  const int ncols = min(TILE, W - X0);
  const unsigned int colmask = ncols >= 32 ? 0xffffffffu : ((1u << ncols) - 1u);
  // Word stores when every 4-byte group of the tile is aligned and inside the row.
  const bool vec = ((W & 3) == 0) && ((reinterpret_cast<unsigned long long>(out) & 3ull) == 0);
  BoxAcc acc;
  acc_init(acc);
  for (int idx = threadIdx.x; idx < H * 8; idx += blockDim.x) {
    const int y = idx >> 3, g = idx & 7;
    const int x = X0 + 4 * g;
    if (x >= W) continue;
    const unsigned int bits = (state[y] & colmask) >> (4 * g) & 0xFu;
    unsigned char* row = out + (long long)y * W;
    if (vec && x + 3 < W) {
      const unsigned int word = (bits & 1u) | ((bits >> 1) & 1u) << 8 | ((bits >> 2) & 1u) << 16 |
                                ((bits >> 3) & 1u) << 24;
      *reinterpret_cast<unsigned int*>(row + x) = word;
    } else {
      for (int k = 0; k < 4 && x + k < W; ++k) row[x + k] = (bits >> k) & 1u;
    }
    if (bits) {
      const int first = __ffs((int)bits) - 1;
      const int last = 31 - __clz((int)bits);
      acc_add(acc, (unsigned int)__popc(bits), x + first, x + last, y, W, H);
    }
  }
  block_merge_finalize_blocks(acc, m, W, H, ws, areas, boxes, gridDim.x);
}

}  // namespace raster
}  // namespace decal
