// PNG and JPEG decoding for qlspec_image.h. libpng and libjpeg report errors by longjmp, so each
// decoder keeps C++ objects with destructors out of the frames a longjmp can skip.
#include "qlspec_image.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <jpeglib.h>
#include <png.h>

namespace qlspec {
namespace {

struct File {
  FILE* f;
  explicit File(const std::string& path) : f(std::fopen(path.c_str(), "rb")) {}
  ~File() { if (f) std::fclose(f); }
};

void check_size(const std::string& path, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0 || width * height > kMaxPixels)
    throw std::runtime_error(path + ": image of " + std::to_string(width) + "x" + std::to_string(height) +
                             " pixels (at most " + std::to_string(kMaxPixels) + " pixels)");
}

// ---------------------------------------------------------------------------------------------
// PNG

struct PngError {
  jmp_buf jump;
  char message[200];
};

void png_fail(png_structp png, png_const_charp msg) {
  PngError* e = static_cast<PngError*>(png_get_error_ptr(png));
  std::snprintf(e->message, sizeof e->message, "%s", msg);
  longjmp(e->jump, 1);
}

void png_quiet(png_structp, png_const_charp) {}

// Returns nullptr on success, else the error message (in `err`); fills `img`'s size and pixels. The
// row table lives in the caller (`rows`), so nothing here needs freeing after a longjmp but libpng's.
const char* decode_png(FILE* f, Image* img, PngError* err, std::vector<uint8_t>* pixels, std::vector<png_bytep>* rows) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, err, png_fail, png_quiet);
  if (!png) return "out of memory";
  png_infop info = png_create_info_struct(png);
  if (!info) { png_destroy_read_struct(&png, nullptr, nullptr); return "out of memory"; }
  if (setjmp(err->jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    return err->message;
  }
  png_set_user_limits(png, 1 << 16, 1 << 16);
  png_init_io(png, f);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (static_cast<int64_t>(width) * height > kMaxPixels) png_error(png, "image too large");
  const int color = png_get_color_type(png, info);
  png_set_expand(png);  // palette -> RGB, grey < 8 bits -> 8 bits, tRNS -> alpha
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(width) * 3) png_error(png, "unexpected row layout after transforms");
  pixels->resize(static_cast<size_t>(width) * height * 3);
  rows->resize(height);
  for (png_uint_32 y = 0; y < height; ++y) (*rows)[y] = pixels->data() + static_cast<size_t>(y) * width * 3;
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  img->width = static_cast<int>(width);
  img->height = static_cast<int>(height);
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// JPEG

struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  JpegError* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  longjmp(e->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}

const char* decode_jpeg(FILE* f, Image* img, JpegError* err, std::vector<uint8_t>* pixels) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = jpeg_fail;
  err->mgr.emit_message = jpeg_quiet;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return err->message;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(err->message, sizeof err->message, "CMYK JPEG files are not supported");
    jpeg_destroy_decompress(&cinfo);
    return err->message;
  }
  if (static_cast<int64_t>(cinfo.image_width) * cinfo.image_height > kMaxPixels) {
    std::snprintf(err->message, sizeof err->message, "image too large");
    jpeg_destroy_decompress(&cinfo);
    return err->message;
  }
  cinfo.out_color_space = JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_decompress(&cinfo);
  const size_t stride = static_cast<size_t>(cinfo.output_width) * 3;
  pixels->resize(stride * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = pixels->data() + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  img->width = static_cast<int>(cinfo.output_width);
  img->height = static_cast<int>(cinfo.output_height);
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return nullptr;
}

}  // namespace

Image read_image(const std::string& path) {
  File file(path);
  if (!file.f) throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) + ")");
  unsigned char magic[8] = {0};
  const size_t n = std::fread(magic, 1, sizeof magic, file.f);
  std::rewind(file.f);
  Image img;
  const char* failure = nullptr;
  if (n == 8 && png_sig_cmp(magic, 0, 8) == 0) {
    PngError err{};
    std::vector<png_bytep> rows;
    failure = decode_png(file.f, &img, &err, &img.rgb, &rows);
    if (failure) throw std::runtime_error(path + ": bad PNG (" + failure + ")");
  } else if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    JpegError err{};
    failure = decode_jpeg(file.f, &img, &err, &img.rgb);
    if (failure) throw std::runtime_error(path + ": bad JPEG (" + failure + ")");
  } else {
    throw std::runtime_error(path + ": not a PNG or JPEG file");
  }
  check_size(path, img.width, img.height);
  return img;
}

}  // namespace qlspec
