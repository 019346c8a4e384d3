// The AI application around a generated network: photo -> network input codes -> network ->
// 68 landmarks in the photo's pixels. Each step equals its Python counterpart:
//
//   crop_resize   qlspec.data.crop.crop_image: the ROI rounded half to even, cut with zeros outside
//                 the photo, resized by OpenCV's INTER_LINEAR 8-bit arithmetic (resize_bilinear):
//                 float32 source coordinates, 11-bit weights, the SIMD rounding. Integer-exact.
//   input_codes   qlspec.stages.convert.integer_inputs: channel order, (p - mean) / std, the input
//                 quantiser. Both are functions of one 8-bit pixel value, so the generator tabulates
//                 the Python pipeline's code for each of the 256 values (AppConfig::code) and this
//                 step is a table look-up. Integer-exact.
//   landmarks     qlspec.evaluation.landmarks_from_outputs + qlspec.data.crop.from_crop: outputs
//                 times their eps, de-normalised (z * std + mean), the morphable model's 68 points
//                 (3DDFA's frame rule), mapped from the crop to the photo. Double precision, the same
//                 operations in another summation order: equal within float rounding.
#pragma once

#include <cstdint>
#include <vector>

#include "qlspec_image.h"

namespace qlspec {

struct AppConfig {
  int size;                 // side of the square network input
  bool bgr;                 // the network takes B, G, R planes (3DDFA); else R, G, B
  const int32_t* code;      // [256]: the input code of an 8-bit pixel value
  int num_params;           // 62
  const double* eps;        // [num_params]: output quantum per output
  const double* mean;       // [num_params]: de-normalisation
  const double* stdev;      // [num_params]
  int num_points;           // 68
  const double* u;          // [3 * num_points]: mean shape of the landmark rows, xyz interleaved
  const double* w_shp;      // [3 * num_points x 40], row-major
  const double* w_exp;      // [3 * num_points x 10]
  bool frame_3ddfa;         // the model yields 3DDFA's 1-based, y-up frame: x - 1, size - y
  double model_size;        // the frame rule's size
};

const AppConfig& app_config();

struct Roi {
  double sx, sy, ex, ey;
};

// qlspec.data.crop.round_roi: each value rounded to the nearest integer, halves to even.
Roi round_roi(const Roi& roi);

// The size x size x 3 crop of `img` at the rounded `roi` (RGB, row-major). Throws for an empty box.
std::vector<uint8_t> crop_resize(const Image& img, const Roi& roi, int size);

// The network input (planar, channels in the network's order) from a crop, as codes of type T.
template <typename T>
void input_codes(const std::vector<uint8_t>& crop, const AppConfig& cfg, T* out) {
  const int plane = cfg.size * cfg.size;
  for (int c = 0; c < 3; ++c) {
    const int src = cfg.bgr ? 2 - c : c;
    for (int i = 0; i < plane; ++i) out[c * plane + i] = static_cast<T>(cfg.code[crop[3 * i + src]]);
  }
}

// The landmarks (x, y per point, photo pixels) from the integer outputs, for a crop cut at the
// rounded `roi`.
std::vector<double> landmarks(const std::vector<int64_t>& outputs, const AppConfig& cfg, const Roi& rounded_roi);

}  // namespace qlspec
