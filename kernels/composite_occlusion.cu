// The fused Copy-Paste update of a batch, one launch: for each sample b and band of rows,
//   1. out[b] = round_half_up(clip(dst[b] * (1 - a) + src[partner[b]] * a)) over the band
//      (exactly composite.cu's float32 sequence, so the pixels equal the twin's), and
//   2. for every destination instance m of b: the area and tight box of masks[m] with the
//      pixels under alpha_hard[b] cleared (occlusion_update.cu's reduction, box_reduce.cuh),
//      without writing the cleared mask: only the instances that survive are written, once,
//      by gather_masks.cu into their final slot.
// The band's alpha rows are read by the composite and then again (from L1/L2) by each of the
// sample's instances, instead of once per instance from DRAM. Launcher: composite_occlusion.py.
//
// Grid: (B, bands); block (32, 8). Instances of sample b: [inst_offsets[b], inst_offsets[b+1]).
// The last band block of each instance writes its area and box (ticket, box_reduce.cuh).
#include "box_reduce.cuh"

namespace {

__device__ __forceinline__ float alpha_value(float a) { return a; }
__device__ __forceinline__ float alpha_value(unsigned char a) { return a ? 1.0f : 0.0f; }

template <typename A, bool VEC4>
__device__ __forceinline__ void composite_occlusion_impl(
    const unsigned char* __restrict__ dst, const unsigned char* __restrict__ src,
    const long long* __restrict__ partner, const A* __restrict__ alpha,
    const unsigned char* __restrict__ hard, const unsigned char* __restrict__ masks,
    const long long* __restrict__ inst_offsets, unsigned char* __restrict__ out, int H, int W,
    int C, int rows_per_band, unsigned int* __restrict__ ws, long long* __restrict__ areas,
    float* __restrict__ boxes) {
  const long long b = blockIdx.x;
  const long long plane = (long long)H * W;
  const int y_begin = (int)blockIdx.y * rows_per_band;
  const int y_end = min(H, y_begin + rows_per_band);
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  const int nthreads = blockDim.x * blockDim.y;

  // 1. composite
  const long long img = plane * C;
  const unsigned char* d = dst + b * img;
  const unsigned char* s = src + partner[b] * img;
  const A* a = alpha + b * plane;
  unsigned char* o = out + b * img;
  const long long p_end = (long long)y_end * W;
  if (VEC4 && C == 3) {
    // RGB, 4 pixels per thread: three 32-bit words of dst, src and out (12 bytes, aligned
    // because W % 4 == 0), the same per-channel arithmetic as below.
    for (long long p = (long long)y_begin * W + 4ll * tid; p < p_end; p += 4ll * nthreads) {
      const unsigned int* d4 = reinterpret_cast<const unsigned int*>(d + 3 * p);
      const unsigned int* s4 = reinterpret_cast<const unsigned int*>(s + 3 * p);
      const unsigned int dw[3] = {d4[0], d4[1], d4[2]};
      const unsigned int sw[3] = {s4[0], s4[1], s4[2]};
      float av[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) av[k] = alpha_value(a[p + k]);
      unsigned int ow[3] = {0u, 0u, 0u};
#pragma unroll
      for (int j = 0; j < 12; ++j) {
        const float al = av[j / 3];
        const float keep = __fsub_rn(1.0f, al);
        const int shift = 8 * (j & 3);
        const float dv = (float)((dw[j >> 2] >> shift) & 0xffu);
        const float sv = (float)((sw[j >> 2] >> shift) & 0xffu);
        float v = __fadd_rn(__fmul_rn(dv, keep), __fmul_rn(sv, al));
        v = floorf(__fadd_rn(v, 0.5f));
        v = fminf(fmaxf(v, 0.0f), 255.0f);
        ow[j >> 2] |= (unsigned int)v << shift;
      }
      unsigned int* o4 = reinterpret_cast<unsigned int*>(o + 3 * p);
      o4[0] = ow[0];
      o4[1] = ow[1];
      o4[2] = ow[2];
    }
  } else {
    for (long long p = (long long)y_begin * W + tid; p < p_end; p += nthreads) {
      const float av = alpha_value(a[p]);
      const float keep = __fsub_rn(1.0f, av);
      for (int c = 0; c < C; ++c) {
        const long long i = p * C + c;
        float v = __fadd_rn(__fmul_rn((float)d[i], keep), __fmul_rn((float)s[i], av));
        v = floorf(__fadd_rn(v, 0.5f));
        v = fminf(fmaxf(v, 0.0f), 255.0f);
        o[i] = (unsigned char)v;
      }
    }
  }

  // 2. occlusion: area and box of each destination instance after clearing the pasted pixels
  const unsigned char* h = hard + b * plane;
  const long long m_end = inst_offsets[b + 1];
  for (long long m = inst_offsets[b]; m < m_end; ++m) {
    const unsigned char* msk = masks + m * plane;
    decal::BoxAcc acc;
    decal::acc_init(acc);
    for (int y = y_begin + (int)threadIdx.y; y < y_end; y += (int)blockDim.y) {
      const long long row = (long long)y * W;
      if (VEC4) {
        const unsigned int* m4 = reinterpret_cast<const unsigned int*>(msk + row);
        const unsigned int* h4 = reinterpret_cast<const unsigned int*>(h + row);
        for (int k = threadIdx.x; k < (W >> 2); k += blockDim.x) {
          const unsigned int v = m4[k] & ~__vcmpne4(h4[k], 0u);
          const unsigned int nz = __vcmpne4(v, 0u);
          if (nz) {
            const int first = (__ffs((int)nz) - 1) >> 3;
            const int last = (31 - __clz((int)nz)) >> 3;
            decal::acc_add(acc, (unsigned int)__popc(nz) >> 3, 4 * k + first, 4 * k + last, y, W,
                           H);
          }
        }
      } else {
        for (int x = threadIdx.x; x < W; x += blockDim.x)
          if (msk[row + x] && !h[row + x]) decal::acc_add(acc, 1u, x, x, y, W, H);
      }
    }
    decal::block_merge_finalize(acc, m, W, H, ws, areas, boxes);  // bands = gridDim.y
    __syncthreads();  // warp_acc is reused by the next instance
  }
}

}  // namespace

#define DECAL_COMPOSITE_OCCLUSION(NAME, A, VEC4)                                                 \
  extern "C" __global__ void __launch_bounds__(256) NAME(                                      \
      const unsigned char* __restrict__ dst, const unsigned char* __restrict__ src,            \
      const long long* __restrict__ partner, const A* __restrict__ alpha,                      \
      const unsigned char* __restrict__ hard, const unsigned char* __restrict__ masks,         \
      const long long* __restrict__ inst_offsets, unsigned char* __restrict__ out, int H,      \
      int W, int C, int rows_per_band, unsigned int* __restrict__ ws,                          \
      long long* __restrict__ areas, float* __restrict__ boxes) {                              \
    composite_occlusion_impl<A, VEC4>(dst, src, partner, alpha, hard, masks, inst_offsets, out, \
                                      H, W, C, rows_per_band, ws, areas, boxes);               \
  }

// alpha float32 (blurred) or uint8 (hard; may be the same array as `hard`); _x4: masks and
// hard read as 32-bit words, RGB images as 12-byte groups of 4 pixels (W % 4 == 0, all
// planes and images 4-byte aligned).
DECAL_COMPOSITE_OCCLUSION(composite_occlusion_f32, float, false)
DECAL_COMPOSITE_OCCLUSION(composite_occlusion_u8, unsigned char, false)
DECAL_COMPOSITE_OCCLUSION(composite_occlusion_f32_x4, float, true)
DECAL_COMPOSITE_OCCLUSION(composite_occlusion_u8_x4, unsigned char, true)
