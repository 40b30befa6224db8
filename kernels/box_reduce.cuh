// Shared device code: pixel count and tight box of per-instance masks, optionally fused with
// clearing the pixels covered by an alpha plane (occlusion). Included by mask_boxes.cu and
// occlusion_update.cu. No standard headers, so NVRTC (CuPy) and nvcc both compile it.
//
// Grid: blockIdx.x = instance m (0..M-1), blockIdx.y = band of rows_per_band rows. Block:
// (32, 8) threads (any shape whose size is a multiple of 32, at most 1024). Each block reduces
// its band in registers and shared memory, merges into a per-instance workspace with atomics,
// and the last block of an instance to finish (ticket counter) writes areas[m] and boxes[m].
//
// Workspace: WS_WORDS uint32 per instance, zero-filled by the launcher:
//   [0..1] u64 pixel count, [2] max(W - x), [3] max(H - y), [4] max(x + 1), [5] max(y + 1),
//   [6] blocks finished, [7] padding. Zero means "no pixel" for every coordinate field, so a
//   zero-filled workspace is the identity of the reduction.
#pragma once

namespace decal {

constexpr int WS_WORDS = 8;
constexpr unsigned int FULL_WARP = 0xffffffffu;

struct BoxAcc {
  unsigned long long count;
  unsigned int nx0;  // max of (W - x): x_min = W - nx0
  unsigned int ny0;  // max of (H - y): y_min = H - ny0
  unsigned int x1;   // max of (x + 1): exclusive x_max
  unsigned int y1;   // max of (y + 1): exclusive y_max
};

__device__ __forceinline__ void acc_init(BoxAcc& a) {
  a.count = 0ull;
  a.nx0 = a.ny0 = a.x1 = a.y1 = 0u;
}

// n nonzero pixels in row y, the first at x_first and the last at x_last.
__device__ __forceinline__ void acc_add(BoxAcc& a, unsigned int n, int x_first, int x_last,
                                        int y, int W, int H) {
  a.count += n;
  a.nx0 = max(a.nx0, (unsigned int)(W - x_first));
  a.ny0 = max(a.ny0, (unsigned int)(H - y));
  a.x1 = max(a.x1, (unsigned int)(x_last + 1));
  a.y1 = max(a.y1, (unsigned int)(y + 1));
}

__device__ __forceinline__ void warp_reduce(BoxAcc& a) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    a.count += __shfl_down_sync(FULL_WARP, a.count, off);
    a.nx0 = max(a.nx0, __shfl_down_sync(FULL_WARP, a.nx0, off));
    a.ny0 = max(a.ny0, __shfl_down_sync(FULL_WARP, a.ny0, off));
    a.x1 = max(a.x1, __shfl_down_sync(FULL_WARP, a.x1, off));
    a.y1 = max(a.y1, __shfl_down_sync(FULL_WARP, a.y1, off));
  }
}

// Reduce the block's accumulators, merge into the workspace of instance m, and let the last
// of the `expected_blocks` blocks of the instance write area and box. Every thread of the
// block must call this; warps other than 0 return early (callers that loop must
// __syncthreads() before the next call, which reuses warp_acc).
__device__ __forceinline__ void block_merge_finalize_blocks(BoxAcc acc, long long m, int W, int H,
                                                            unsigned int* __restrict__ ws,
                                                            long long* __restrict__ areas,
                                                            float* __restrict__ boxes,
                                                            unsigned int expected_blocks) {
  __shared__ BoxAcc warp_acc[32];
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int nwarps = (blockDim.x * blockDim.y) >> 5;

  warp_reduce(acc);
  if (lane == 0) warp_acc[warp] = acc;
  __syncthreads();
  if (warp != 0) return;

  BoxAcc b;
  acc_init(b);
  if (lane < nwarps) b = warp_acc[lane];
  warp_reduce(b);
  if (lane != 0) return;

  unsigned int* w = ws + m * WS_WORDS;
  unsigned long long* count = reinterpret_cast<unsigned long long*>(w);
  if (b.count) {
    atomicAdd(count, b.count);
    atomicMax(w + 2, b.nx0);
    atomicMax(w + 3, b.ny0);
    atomicMax(w + 4, b.x1);
    atomicMax(w + 5, b.y1);
  }
  __threadfence();  // our merge is visible device-wide before we take a ticket
  const unsigned int ticket = atomicAdd(w + 6, 1u);
  if (ticket != expected_blocks - 1) return;

  __threadfence();
  // Last block of instance m: every other block's atomics happened before its ticket.
  const unsigned long long n = atomicAdd(count, 0ull);
  float* box = boxes + m * 4;
  areas[m] = (long long)n;
  if (n == 0ull) {
    box[0] = box[1] = box[2] = box[3] = 0.0f;
  } else {
    box[0] = (float)(W - (int)atomicMax(w + 2, 0u));
    box[1] = (float)(H - (int)atomicMax(w + 3, 0u));
    box[2] = (float)atomicMax(w + 4, 0u);
    box[3] = (float)atomicMax(w + 5, 0u);
  }
}

// The grid of box_pass: the blocks of instance m are the gridDim.y row bands.
__device__ __forceinline__ void block_merge_finalize(BoxAcc acc, long long m, int W, int H,
                                                     unsigned int* __restrict__ ws,
                                                     long long* __restrict__ areas,
                                                     float* __restrict__ boxes) {
  block_merge_finalize_blocks(acc, m, W, H, ws, areas, boxes, gridDim.y);
}

// One block's share of instance blockIdx.x: rows [blockIdx.y * rows_per_band, +rows_per_band).
// VEC4: rows are read as 32-bit words (requires W % 4 == 0 and 4-byte aligned planes).
// OCCLUDE: pixels where alpha[sample[m]] != 0 are cleared and the result is written to
// new_masks (every pixel of the instance is written exactly once over the grid); the box and
// area are those of the cleared mask. Without OCCLUDE, sample/alpha/new_masks are unused.
template <bool VEC4, bool OCCLUDE>
__device__ __forceinline__ void box_pass(const unsigned char* __restrict__ masks,
                                         const long long* __restrict__ sample,
                                         const unsigned char* __restrict__ alpha,
                                         unsigned char* __restrict__ new_masks, int H, int W,
                                         int rows_per_band, unsigned int* __restrict__ ws,
                                         long long* __restrict__ areas,
                                         float* __restrict__ boxes) {
  const long long m = blockIdx.x;
  const long long plane = (long long)H * (long long)W;
  const unsigned char* src = masks + m * plane;
  const unsigned char* a = OCCLUDE ? alpha + sample[m] * plane : nullptr;
  unsigned char* dst = OCCLUDE ? new_masks + m * plane : nullptr;

  BoxAcc acc;
  acc_init(acc);
  const int y_begin = (int)blockIdx.y * rows_per_band;
  const int y_end = min(H, y_begin + rows_per_band);
  for (int y = y_begin + (int)threadIdx.y; y < y_end; y += (int)blockDim.y) {
    const long long row = (long long)y * W;
    if (VEC4) {
      const int nwords = W >> 2;
      const unsigned int* s4 = reinterpret_cast<const unsigned int*>(src + row);
      for (int k = threadIdx.x; k < nwords; k += blockDim.x) {
        unsigned int v = s4[k];
        if (OCCLUDE) {
          const unsigned int av = reinterpret_cast<const unsigned int*>(a + row)[k];
          v &= ~__vcmpne4(av, 0u);  // clear bytes under alpha
          reinterpret_cast<unsigned int*>(dst + row)[k] = v;
        }
        const unsigned int nz = __vcmpne4(v, 0u);  // 0xff per nonzero byte (little endian)
        if (nz) {
          const int first = (__ffs((int)nz) - 1) >> 3;
          const int last = (31 - __clz((int)nz)) >> 3;
          acc_add(acc, (unsigned int)__popc(nz) >> 3, 4 * k + first, 4 * k + last, y, W, H);
        }
      }
    } else {
      for (int x = threadIdx.x; x < W; x += blockDim.x) {
        unsigned char v = src[row + x];
        if (OCCLUDE) {
          if (a[row + x]) v = 0;
          dst[row + x] = v;
        }
        if (v) acc_add(acc, 1u, x, x, y, W, H);
      }
    }
  }
  block_merge_finalize(acc, m, W, H, ws, areas, boxes);
}

}  // namespace decal
