// COCO RLE instances of a batch (crowd regions, LVIS, filled boxes) decoded straight into their
// uint8 masks at the output size, fused with area and tight box, in one launch. Launcher:
// rle_decode.py; shared machinery: raster_common.cuh.
//
// An RLE is given by its toggle positions q_1 <= q_2 <= ... (column-major pixel indices where
// the value flips: the running sums of the run lengths, the last one left out), so pixel p is
// inside iff an odd number of toggles are <= p. Source column c (pixels [c·h, c·h + h)) then
// starts inside iff #{q <= c·h} is odd, toggles at row q - c·h for each q strictly inside the
// column, and is closed at row h if it ends inside: the column-toggle model of
// raster_common.cuh. Runs crossing column boundaries are handled by those two parities.
//
// Grid: (ceil(W / 32), I); block: 256 threads (the first 32 each own one column of the tile:
// a binary search for the column's first toggle, then a walk over its toggles). Dynamic shared
// memory: H words.
#include "raster_common.cuh"

// toggles: (Q,) int32 source positions, ascending within each instance;
// instances: (I, 4) int32 [toggle begin, end, output row m, geometry table];
// tables: see raster_common.cuh; masks: (M, H, W) uint8; ws: (M, 8) uint32 zero-filled.
extern "C" __global__ void __launch_bounds__(256)
rle_decode_u8(const int* __restrict__ toggles, const int* __restrict__ instances,
              const int* __restrict__ tables, int H, int W, unsigned char* __restrict__ masks,
              unsigned int* __restrict__ ws, long long* __restrict__ areas,
              float* __restrict__ boxes) {
  using namespace decal::raster;
  extern __shared__ unsigned int tog[];
  const int* inst = instances + 4ll * blockIdx.y;
  const int q_begin = inst[0], q_end = inst[1];
  const long long m = inst[2];
  const Table tb = load_table(tables, inst[3], H, W);
  const int X0 = (int)blockIdx.x * TILE;

  for (int y = threadIdx.x; y < H; y += blockDim.x) tog[y] = 0u;
  __syncthreads();
  if (threadIdx.x < TILE) {
    const int X = X0 + (int)threadIdx.x;
    const int c = X < W ? __ldg(tb.cols + X) : -1;
    if (c >= 0 && c < tb.src_w) {
      const unsigned int bit = 1u << threadIdx.x;
      const long long col0 = (long long)c * tb.src_h, col1 = col0 + tb.src_h;
      int lo = q_begin, hi = q_end;  // first toggle > col0
      while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if ((long long)__ldg(toggles + mid) <= col0) lo = mid + 1; else hi = mid;
      }
      int k = lo;
      if ((k - q_begin) & 1) toggle(tog, output_row(tb, 0), H, bit);
      for (; k < q_end; ++k) {
        const long long q = __ldg(toggles + k);
        if (q >= col1) break;
        toggle(tog, output_row(tb, (int)(q - col0)), H, bit);
      }
      if ((k - q_begin) & 1) toggle(tog, output_row(tb, tb.src_h), H, bit);
    }
  }
  __syncthreads();
  block_xor_scan(tog, H);
  write_tile(tog, m, H, W, X0, masks, ws, areas, boxes);
}
