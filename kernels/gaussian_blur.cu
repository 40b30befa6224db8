// Separable Gaussian blur of a batch of (H, W) planes, clamp-to-edge borders. Two launches:
// rows (horizontal) then columns (vertical). Every output is
//   acc = 0; for k in 0..2r: acc = acc + w[k] * in[clamp(i + k - r)]
// with separately rounded products and sums (no FMA), the same float32 sequence as the NumPy
// twin, so the two agree bit for bit. Launcher: gaussian_blur.py.

namespace {

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return min(max(v, lo), hi); }

__device__ __forceinline__ float load_f(const unsigned char* p, long long i) { return (float)p[i]; }
__device__ __forceinline__ float load_f(const float* p, long long i) { return p[i]; }

// Horizontal pass, shared-memory tiled. Grid: (ceil(W / blockDim.x), H, B). Dynamic shared
// memory: (2r + 1) weights + (blockDim.x + 2r) inputs, floats.
template <typename T>
__device__ __forceinline__ void blur_rows(const T* __restrict__ in, float* __restrict__ out,
                                          const float* __restrict__ w, int r, int H, int W) {
  extern __shared__ float sh[];
  float* wsh = sh;
  float* tile = sh + (2 * r + 1);
  const long long row = ((long long)blockIdx.z * H + blockIdx.y) * (long long)W;
  const int x0 = (int)(blockIdx.x * blockDim.x);
  for (int i = threadIdx.x; i <= 2 * r; i += blockDim.x) wsh[i] = w[i];
  for (int i = threadIdx.x; i < (int)blockDim.x + 2 * r; i += blockDim.x)
    tile[i] = load_f(in, row + clampi(x0 - r + i, 0, W - 1));
  __syncthreads();
  const int x = x0 + (int)threadIdx.x;
  if (x >= W) return;
  float acc = 0.0f;
  for (int k = 0; k <= 2 * r; ++k) acc = __fadd_rn(acc, __fmul_rn(wsh[k], tile[threadIdx.x + k]));
  out[row + x] = acc;
}

// Fallback for either pass when the tile would not fit in shared memory (huge sigma): reads
// global memory directly. step = 1 (rows) or W (columns). Grid: (ceil(H*W / blockDim.x), B).
template <typename T>
__device__ __forceinline__ void blur_direct(const T* __restrict__ in, float* __restrict__ out,
                                            const float* __restrict__ w, int r, int H, int W,
                                            int vertical) {
  const long long plane = (long long)H * W;
  const long long base = (long long)blockIdx.y * plane;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < plane; p += stride) {
    const int y = (int)(p / W);
    const int x = (int)(p - (long long)y * W);
    float acc = 0.0f;
    for (int k = 0; k <= 2 * r; ++k) {
      const long long q = vertical ? (long long)clampi(y + k - r, 0, H - 1) * W + x
                                   : (long long)y * W + clampi(x + k - r, 0, W - 1);
      acc = __fadd_rn(acc, __fmul_rn(w[k], load_f(in, base + q)));
    }
    out[base + p] = acc;
  }
}

}  // namespace

constexpr int COL_TILE_W = 32;  // blockDim.x of blur_cols
constexpr int COL_TILE_H = 32;  // output rows per block of blur_cols

extern "C" __global__ void __launch_bounds__(256)
blur_rows_u8(const unsigned char* __restrict__ in, float* __restrict__ out,
             const float* __restrict__ w, int r, int H, int W) {
  blur_rows(in, out, w, r, H, W);
}

extern "C" __global__ void __launch_bounds__(256)
blur_rows_f32(const float* __restrict__ in, float* __restrict__ out,
              const float* __restrict__ w, int r, int H, int W) {
  blur_rows(in, out, w, r, H, W);
}

// Vertical pass, shared-memory tiled. Block (32, 8); grid (ceil(W / 32), ceil(H / 32), B).
// Dynamic shared memory: (2r + 1) weights + (32 + 2r) x 32 inputs, floats.
extern "C" __global__ void __launch_bounds__(256)
blur_cols_f32(const float* __restrict__ in, float* __restrict__ out, const float* __restrict__ w,
              int r, int H, int W) {
  extern __shared__ float sh[];
  float* wsh = sh;
  float* tile = sh + (2 * r + 1);
  const long long base = (long long)blockIdx.z * H * (long long)W;
  const int x = (int)(blockIdx.x * COL_TILE_W + threadIdx.x);
  const int y0 = (int)(blockIdx.y * COL_TILE_H);
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  for (int i = tid; i <= 2 * r; i += blockDim.x * blockDim.y) wsh[i] = w[i];
  const int xc = min(x, W - 1);  // columns past W load a valid value and are not stored
  for (int i = threadIdx.y; i < COL_TILE_H + 2 * r; i += blockDim.y)
    tile[i * COL_TILE_W + threadIdx.x] = in[base + (long long)clampi(y0 - r + i, 0, H - 1) * W + xc];
  __syncthreads();
  if (x >= W) return;
  for (int j = threadIdx.y; j < COL_TILE_H; j += blockDim.y) {
    const int y = y0 + j;
    if (y >= H) break;
    float acc = 0.0f;
    for (int k = 0; k <= 2 * r; ++k)
      acc = __fadd_rn(acc, __fmul_rn(wsh[k], tile[(j + k) * COL_TILE_W + threadIdx.x]));
    out[base + (long long)y * W + x] = acc;
  }
}

extern "C" __global__ void __launch_bounds__(256)
blur_direct_u8(const unsigned char* __restrict__ in, float* __restrict__ out,
               const float* __restrict__ w, int r, int H, int W, int vertical) {
  blur_direct(in, out, w, r, H, W, vertical);
}

extern "C" __global__ void __launch_bounds__(256)
blur_direct_f32(const float* __restrict__ in, float* __restrict__ out,
                const float* __restrict__ w, int r, int H, int W, int vertical) {
  blur_direct(in, out, w, r, H, W, vertical);
}
