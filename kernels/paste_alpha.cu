// Hard paste alpha of a batch: alpha[b] = OR of masks[indices[offsets[b] .. offsets[b+1])],
// written as 0/1 bytes, in one launch. Launcher: paste_alpha.py.
//
// Grid: blockIdx.y = sample b (B <= 65535); blockIdx.x with a grid-stride loop over the
// sample's H*W pixels (any size). Block: 256 threads, one pixel (or one 4-pixel word) each.
// Indexing is 64-bit: M*H*W may exceed 2^31.

extern "C" __global__ void __launch_bounds__(256)
paste_alpha_u8(const unsigned char* __restrict__ masks, const long long* __restrict__ offsets,
               const long long* __restrict__ indices, long long plane,
               unsigned char* __restrict__ alpha) {
  const long long b = blockIdx.y;
  const long long begin = offsets[b];
  const long long end = offsets[b + 1];
  unsigned char* out = alpha + b * plane;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < plane; i += stride) {
    unsigned char acc = 0;
    for (long long j = begin; j < end && acc == 0; ++j) acc = masks[indices[j] * plane + i];
    out[i] = acc != 0;
  }
}

// Same over 32-bit words: plane % 4 == 0 and masks, alpha 4-byte aligned. nwords = plane / 4.
extern "C" __global__ void __launch_bounds__(256)
paste_alpha_u8x4(const unsigned int* __restrict__ masks, const long long* __restrict__ offsets,
                 const long long* __restrict__ indices, long long nwords,
                 unsigned int* __restrict__ alpha) {
  const long long b = blockIdx.y;
  const long long begin = offsets[b];
  const long long end = offsets[b + 1];
  unsigned int* out = alpha + b * nwords;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < nwords; i += stride) {
    unsigned int nz = 0u;  // 0xff per byte already covered
    for (long long j = begin; j < end && nz != 0xffffffffu; ++j)
      nz |= __vcmpne4(masks[indices[j] * nwords + i], 0u);
    out[i] = nz & 0x01010101u;
  }
}
