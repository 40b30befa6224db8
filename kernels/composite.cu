// Copy-Paste blend of a batch, one launch:
//   out[b] = round_half_up(clip(dst[b] * (1 - a) + src[partner[b]] * a, 0, 255)),
// a = alpha[b] per pixel (float32 in [0, 1], or uint8 where nonzero means 1). Every product
// and sum is rounded separately (__fmul_rn / __fadd_rn: no FMA contraction), the same float32
// sequence as the NumPy twin, so the uint8 results agree exactly. Launcher: composite.py.
//
// Grid: blockIdx.y = sample b (B <= 65535); blockIdx.x with a grid-stride loop over the H*W
// pixels; each thread blends the C channels of one pixel. 64-bit indexing throughout.

namespace {

__device__ __forceinline__ float alpha_value(float a) { return a; }
__device__ __forceinline__ float alpha_value(unsigned char a) { return a ? 1.0f : 0.0f; }

template <typename A>
__device__ __forceinline__ void composite_impl(const unsigned char* __restrict__ dst,
                                               const unsigned char* __restrict__ src,
                                               const long long* __restrict__ partner,
                                               const A* __restrict__ alpha,
                                               unsigned char* __restrict__ out, long long plane,
                                               int C) {
  const long long b = blockIdx.y;
  const long long img = plane * C;
  const unsigned char* d = dst + b * img;
  const unsigned char* s = src + partner[b] * img;
  const A* a = alpha + b * plane;
  unsigned char* o = out + b * img;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < plane; p += stride) {
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

}  // namespace

extern "C" __global__ void __launch_bounds__(256)
composite_f32(const unsigned char* __restrict__ dst, const unsigned char* __restrict__ src,
              const long long* __restrict__ partner, const float* __restrict__ alpha,
              unsigned char* __restrict__ out, long long plane, int C) {
  composite_impl(dst, src, partner, alpha, out, plane, C);
}

extern "C" __global__ void __launch_bounds__(256)
composite_u8(const unsigned char* __restrict__ dst, const unsigned char* __restrict__ src,
             const long long* __restrict__ partner, const unsigned char* __restrict__ alpha,
             unsigned char* __restrict__ out, long long plane, int C) {
  composite_impl(dst, src, partner, alpha, out, plane, C);
}
