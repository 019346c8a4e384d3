// Reading a photo into 8-bit RGB: PNG (libpng) or JPEG (libjpeg), told apart by their signatures.
//
// PNG: palette and low-bit grey are expanded, 16-bit samples keep their high byte, grey is copied
// to R, G and B, alpha is dropped (not composited), no gamma correction: what Pillow's
// Image.convert("RGB") gives. JPEG: libjpeg's defaults (integer slow DCT, fancy upsampling),
// converted to RGB by libjpeg; CMYK files are refused. Images larger than kMaxPixels are refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qlspec {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height x width x 3, row-major
};

constexpr int64_t kMaxPixels = int64_t(1) << 26;  // 64 megapixels

// Throws std::runtime_error("PATH: reason") for a file that is missing, not PNG or JPEG, or corrupt.
Image read_image(const std::string& path);

}  // namespace qlspec
