// Polygon instances of a batch rasterised straight into their uint8 masks at the output size,
// fused with each instance's area and tight box, in one launch. Launcher and derivation:
// rasterize_polygons.py; shared machinery (geometry tables, column scan, tile write):
// raster_common.cuh.
//
// The decision rule is pycocotools' rleFrPoly (maskApi.c), evaluated per (edge, source column)
// instead of by walking the whole boundary: vertices are taken on a 5× grid
// ((int)(5·x + .5), done on the host); each edge is the DDA of rleFrPoly (x-major when
// |dx| >= |dy|, points t = 0..d, the varying coordinate (int)(start + s·t + .5) with
// s = Δ/d in double, the edge walked from its left / top end); the edge toggles source column
// c where two consecutive DDA points have upsampled x = 5c+2 and 5c+3 (the column's centre),
// at source row clamp(ceil((v + .5) / 5 - .5), 0, h), v the smaller y of the two points.
// Double arithmetic uses the _rn intrinsics, so no FMA contraction changes a rounding.
//
// Grid: (ceil(W / 32), I) for I listed instances; block: 256 threads (8 warps; a warp walks
// every 8th edge, its lanes are the tile's 32 columns). Dynamic shared memory: 2·H words
// (toggles, and the union of an instance's polygons).
#include "raster_common.cuh"

namespace {

// (int)(base + s·t + .5) in double, rounded op by op like the C code.
__device__ __forceinline__ int dda(int base, double s, int t) {
  return (int)__dadd_rn(__dadd_rn((double)base, __dmul_rn(s, (double)t)), 0.5);
}

// Source row (0..src_h) at which edge (x0,y0)->(x1,y1) (upsampled ints) toggles source
// column c, or -1 when it does not cross the column's centre.
__device__ int edge_toggle_row(int x0, int y0, int x1, int y1, int c, int src_h) {
  const int target = 5 * c + 2;  // the crossing pair has upsampled x {target, target + 1}
  const int dx = abs(x1 - x0), dy = abs(y1 - y0);
  const bool xmajor = dx >= dy;
  const bool flip = xmajor ? (x0 > x1) : (y0 > y1);
  const int xs = flip ? x1 : x0, ys = flip ? y1 : y0;
  const int xe = flip ? x0 : x1, ye = flip ? y0 : y1;
  int vmin;
  if (xmajor) {  // u(t) = xs + t, v(t) = dda(ys, s, t), t = 0..dx
    const int t = target - xs;
    if (t < 0 || t >= dx) return -1;
    const double s = __ddiv_rn((double)(ye - ys), (double)dx);
    vmin = min(dda(ys, s, t), dda(ys, s, t + 1));
  } else {  // v(t) = ys + t, u(t) = dda(xs, s, t) monotone with steps <= 1, t = 0..dy
    if (xe == xs) return -1;
    const double s = __ddiv_rn((double)(xe - xs), (double)dy);
    const bool inc = xe > xs;
    const int u0 = dda(xs, s, 0), u1 = dda(xs, s, dy);
    if (inc ? !(u0 <= target && u1 > target) : !(u0 > target && u1 <= target)) return -1;
    int lo = 0, hi = dy;  // u(lo) before the pair, u(hi) past it
    while (hi - lo > 1) {
      const int mid = (lo + hi) >> 1;
      const int u = dda(xs, s, mid);
      if (inc ? (u > target) : (u <= target)) hi = mid; else lo = mid;
    }
    vmin = ys + lo;  // the pair is (lo, lo + 1)
  }
  double yd = __dadd_rn(__ddiv_rn(__dadd_rn((double)vmin, 0.5), 5.0), -0.5);
  yd = fmin(fmax(yd, 0.0), (double)src_h);
  return (int)ceil(yd);
}

__device__ __forceinline__ void zero_words(unsigned int* w, int n) {
  for (int y = threadIdx.x; y < n; y += blockDim.x) w[y] = 0u;
}

}  // namespace

// verts: (V, 2) int32 upsampled (x, y); polys: (NP, 2) int32 [vertex begin, end);
// instances: (I, 4) int32 [polygon begin, end, output row m, geometry table];
// tables: see raster_common.cuh; masks: (M, H, W) uint8; ws: (M, 8) uint32 zero-filled.
extern "C" __global__ void __launch_bounds__(256)
rasterize_polygons_u8(const int* __restrict__ verts, const int* __restrict__ polys,
                      const int* __restrict__ instances, const int* __restrict__ tables, int H,
                      int W, unsigned char* __restrict__ masks, unsigned int* __restrict__ ws,
                      long long* __restrict__ areas, float* __restrict__ boxes) {
  using namespace decal::raster;
  extern __shared__ unsigned int sh[];
  unsigned int* tog = sh;
  unsigned int* uni = sh + H;
  const int* inst = instances + 4ll * blockIdx.y;
  const int p_begin = inst[0], p_end = inst[1];
  const long long m = inst[2];
  const Table tb = load_table(tables, inst[3], H, W);
  const int X0 = (int)blockIdx.x * TILE;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int X = X0 + lane;
  const int c = X < W ? __ldg(tb.cols + X) : -1;
  const bool active = c >= 0 && c < tb.src_w;
  const unsigned int bit = 1u << lane;
  const bool several = p_end - p_begin > 1;

  zero_words(tog, H);
  if (several) zero_words(uni, H);
  __syncthreads();
  for (int p = p_begin; p < p_end; ++p) {
    if (p > p_begin) {
      zero_words(tog, H);
      __syncthreads();
    }
    const int v_begin = polys[2ll * p], v_end = polys[2ll * p + 1];
    const int k = v_end - v_begin;
    if (active) {
      for (int e = warp; e < k; e += THREADS / 32) {
        const long long a = v_begin + e, b = v_begin + (e + 1 < k ? e + 1 : 0);
        const int r = edge_toggle_row(__ldg(verts + 2 * a), __ldg(verts + 2 * a + 1),
                                      __ldg(verts + 2 * b), __ldg(verts + 2 * b + 1), c,
                                      tb.src_h);
        if (r >= 0) toggle(tog, output_row(tb, r), H, bit);
      }
    }
    __syncthreads();
    block_xor_scan(tog, H);
    if (several) {
      for (int y = threadIdx.x; y < H; y += blockDim.x) uni[y] |= tog[y];
      __syncthreads();
    }
  }
  write_tile(several ? uni : tog, m, H, W, X0, masks, ws, areas, boxes);
}
