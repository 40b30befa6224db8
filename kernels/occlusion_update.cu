// Occlusion of destination instances by the pasted alpha, fused with their new area and box:
// new_masks[m] = masks[m] with pixels under alpha_hard[sample[m]] cleared, in one launch.
// See box_reduce.cuh for the grid, the block shape and the workspace. Launcher:
// occlusion_update.py.
#include "box_reduce.cuh"

extern "C" __global__ void __launch_bounds__(256)
occlusion_update_u8(const unsigned char* __restrict__ masks, const long long* __restrict__ sample,
                    const unsigned char* __restrict__ alpha, unsigned char* __restrict__ new_masks,
                    int H, int W, int rows_per_band, unsigned int* __restrict__ ws,
                    long long* __restrict__ areas, float* __restrict__ boxes) {
  decal::box_pass<false, true>(masks, sample, alpha, new_masks, H, W, rows_per_band, ws, areas,
                               boxes);
}

// Same, on 32-bit words: W % 4 == 0 and masks, alpha, new_masks 4-byte aligned.
extern "C" __global__ void __launch_bounds__(256)
occlusion_update_u8x4(const unsigned char* __restrict__ masks,
                      const long long* __restrict__ sample,
                      const unsigned char* __restrict__ alpha,
                      unsigned char* __restrict__ new_masks, int H, int W, int rows_per_band,
                      unsigned int* __restrict__ ws, long long* __restrict__ areas,
                      float* __restrict__ boxes) {
  decal::box_pass<true, true>(masks, sample, alpha, new_masks, H, W, rows_per_band, ws, areas,
                              boxes);
}
