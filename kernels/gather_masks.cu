// The output masks of a Copy-Paste batch written once, into their final (compacted) slots:
//   out[j] = masks[src_row[j]] with the pixels under alpha_hard[clear[j]] cleared  (clear >= 0:
//            a surviving destination instance), or an unmodified copy (clear < 0: a pasted
//            instance). One launch. Launcher: gather_masks.py.
//
// Grid: blockIdx.y = output row j (<= 65535); blockIdx.x with a grid-stride loop over the
// H*W pixels (or 4-pixel words). 64-bit indexing.

extern "C" __global__ void __launch_bounds__(256)
gather_masks_u8(const unsigned char* __restrict__ masks, const unsigned char* __restrict__ hard,
                const long long* __restrict__ src_row, const long long* __restrict__ clear,
                long long plane, unsigned char* __restrict__ out) {
  const long long j = blockIdx.y;
  const unsigned char* m = masks + src_row[j] * plane;
  const long long cs = clear[j];
  const unsigned char* h = cs >= 0 ? hard + cs * plane : nullptr;
  unsigned char* o = out + j * plane;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < plane; i += stride)
    o[i] = (h && h[i]) ? (unsigned char)0 : m[i];
}

// Same over 32-bit words: plane % 4 == 0 and all planes 4-byte aligned; nwords = plane / 4.
extern "C" __global__ void __launch_bounds__(256)
gather_masks_u8x4(const unsigned int* __restrict__ masks, const unsigned int* __restrict__ hard,
                  const long long* __restrict__ src_row, const long long* __restrict__ clear,
                  long long nwords, unsigned int* __restrict__ out) {
  const long long j = blockIdx.y;
  const unsigned int* m = masks + src_row[j] * nwords;
  const long long cs = clear[j];
  const unsigned int* h = cs >= 0 ? hard + cs * nwords : nullptr;
  unsigned int* o = out + j * nwords;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < nwords; i += stride) {
    const unsigned int v = m[i];
    o[i] = h ? (v & ~__vcmpne4(h[i], 0u)) : v;
  }
}
