// Pixel count and tight xyxy box (exclusive max) of every mask of a batch, in one launch.
// See box_reduce.cuh for the grid, the block shape and the workspace. Launcher: mask_boxes.py.
#include "box_reduce.cuh"

extern "C" __global__ void __launch_bounds__(256)
mask_boxes_u8(const unsigned char* __restrict__ masks, int H, int W, int rows_per_band,
              unsigned int* __restrict__ ws, long long* __restrict__ areas,
              float* __restrict__ boxes) {
  decal::box_pass<false, false>(masks, nullptr, nullptr, nullptr, H, W, rows_per_band, ws,
                                areas, boxes);
}

// Same, reading rows as 32-bit words: W % 4 == 0 and masks 4-byte aligned.
extern "C" __global__ void __launch_bounds__(256)
mask_boxes_u8x4(const unsigned char* __restrict__ masks, int H, int W, int rows_per_band,
                unsigned int* __restrict__ ws, long long* __restrict__ areas,
                float* __restrict__ boxes) {
  decal::box_pass<true, false>(masks, nullptr, nullptr, nullptr, H, W, rows_per_band, ws,
                               areas, boxes);
}
