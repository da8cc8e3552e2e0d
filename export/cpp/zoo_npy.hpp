// Reading and writing NumPy `.npy` files (format versions 1-3, little-endian, C order) as torch tensors,
// and the SHA-256 that pins a test vector's bytes.
// The format: magic "\x93NUMPY", version, header length, a Python-dict header
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }, then the raw array bytes.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace zoo::npy {

struct DType {
  const char* descr;  // NumPy's type string
  const char* name;   // what zoo metadata calls it
  c10::ScalarType scalar;
};

// The dtypes exported models take and give; others are refused with their NumPy name.
inline const std::vector<DType>& dtypes() {
  static const std::vector<DType> table = {
      {"<f4", "float32", torch::kFloat32}, {"<f8", "float64", torch::kFloat64}, {"<f2", "float16", torch::kFloat16},
      {"<i8", "int64", torch::kInt64},     {"<i4", "int32", torch::kInt32},     {"<i2", "int16", torch::kInt16},
      {"|i1", "int8", torch::kInt8},       {"|u1", "uint8", torch::kUInt8},     {"|b1", "bool", torch::kBool},
  };
  return table;
}

inline std::string dtype_name(c10::ScalarType t) {
  for (const auto& d : dtypes())
    if (d.scalar == t) return d.name;
  return std::string(c10::toString(t));
}

inline std::optional<c10::ScalarType> scalar_type_named(const std::string& name) {
  for (const auto& d : dtypes())
    if (name == d.name) return d.scalar;
  return std::nullopt;
}

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

// The value of `key` in the header dict, as the text up to the next top-level ',' or '}'.
inline std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw Error(path + " is not a valid .npy file: its header has no '" + key + "'");
  size_t colon = header.find(':', at);
  size_t start = header.find_first_not_of(' ', colon + 1);
  size_t end = start;
  int depth = 0;
  for (; end < header.size(); ++end) {
    char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  std::string value = header.substr(start, end - start);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}

inline std::vector<int64_t> parse_shape(const std::string& text, const std::string& path) {
  // "(2, 3)", "(5,)" or "()" for a scalar
  if (text.size() < 2 || text.front() != '(' || text.back() != ')')
    throw Error(path + " is not a valid .npy file: bad shape " + text);
  std::vector<int64_t> shape;
  std::string inner = text.substr(1, text.size() - 2);
  size_t i = 0;
  while (i < inner.size()) {
    size_t comma = inner.find(',', i);
    std::string item = inner.substr(i, comma == std::string::npos ? std::string::npos : comma - i);
    size_t first = item.find_first_not_of(' ');
    if (first != std::string::npos) {
      try {
        shape.push_back(std::stoll(item.substr(first)));
      } catch (const std::exception&) {
        throw Error(path + " is not a valid .npy file: bad shape " + text);
      }
    }
    if (comma == std::string::npos) break;
    i = comma + 1;
  }
  return shape;
}

}  // namespace detail

// Parses .npy bytes from `in`; `path` names the file in errors.
inline torch::Tensor read(std::istream& in, const std::string& path) {
  char magic[6] = {};
  in.read(magic, 6);
  if (!in || std::string(magic, 6) != "\x93NUMPY")
    throw Error(path + " is not a .npy file (write it with numpy.save)");
  unsigned char version[2] = {};
  in.read(reinterpret_cast<char*>(version), 2);
  uint32_t header_len = 0;
  if (version[0] == 1) {
    unsigned char b[2] = {};
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else if (version[0] == 2 || version[0] == 3) {
    unsigned char b[4] = {};
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw Error(path + " has unsupported .npy version " + std::to_string(version[0]));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (!in) throw Error(path + " is truncated (incomplete .npy header)");

  std::string descr = detail::header_field(header, "descr", path);
  if (descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"')) descr = descr.substr(1, descr.size() - 2);
  // '=' (native) is little-endian on every platform libtorch ships for.
  if (!descr.empty() && descr[0] == '=') descr[0] = '<';
  if (descr.size() == 3 && descr[0] == '<' && (descr[1] == 'i' || descr[1] == 'u' || descr[1] == 'b') && descr[2] == '1')
    descr[0] = '|';
  if (!descr.empty() && descr[0] == '>')
    throw Error(path + " is big-endian (" + descr + "); save it little-endian (array.astype('<" + descr.substr(1) + "'))");
  const DType* dtype = nullptr;
  for (const auto& d : dtypes())
    if (descr == d.descr) dtype = &d;
  if (dtype == nullptr) throw Error(path + " has unsupported dtype " + descr);
  if (detail::header_field(header, "fortran_order", path) != "False")
    throw Error(path + " is Fortran-ordered; save numpy.ascontiguousarray(array) instead");
  std::vector<int64_t> shape = detail::parse_shape(detail::header_field(header, "shape", path), path);

  torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype->scalar));
  auto nbytes = static_cast<std::streamsize>(tensor.nbytes());
  in.read(static_cast<char*>(tensor.data_ptr()), nbytes);
  if (in.gcount() != nbytes)
    throw Error(path + " is truncated: " + std::to_string(in.gcount()) + " of " + std::to_string(nbytes) + " data bytes");
  return tensor;
}

inline torch::Tensor read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + " not found");
  return read(in, path);
}

// The whole content of a file.
inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + " not found");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) throw Error("cannot read " + path);
  return bytes.str();
}

// The SHA-256 (FIPS 180-4) of `data` as 64 lowercase hex digits: test vectors are pinned by it,
// as `sha256sum` and Python's hashlib write it.
inline std::string sha256(const std::string& data) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
      0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
      0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
      0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
      0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
      0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  // Padding: a 1 bit, zeros up to 56 bytes mod 64, then the length in bits, big-endian.
  std::string message = data;
  message += static_cast<char>(0x80);
  while (message.size() % 64 != 56) message += '\0';
  uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  for (int i = 7; i >= 0; --i) message += static_cast<char>((bits >> (8 * i)) & 0xFF);
  for (size_t block = 0; block < message.size(); block += 64) {
    uint32_t w[64];
    for (int t = 0; t < 16; ++t) {
      const auto* b = reinterpret_cast<const unsigned char*>(message.data() + block + 4 * t);
      w[t] = (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
    }
    for (int t = 16; t < 64; ++t) {
      uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; ++t) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[t] + w[t];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  char hex[65];
  for (int i = 0; i < 8; ++i) std::snprintf(hex + 8 * i, 9, "%08x", h[i]);
  return std::string(hex, 64);
}

// Writes `tensor` (any device, any layout) to `path` atomically: a partial file never has the final name.
inline void write(const std::string& path, const torch::Tensor& tensor) {
  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  const DType* dtype = nullptr;
  for (const auto& d : dtypes())
    if (d.scalar == t.scalar_type()) dtype = &d;
  if (dtype == nullptr) throw Error("cannot write dtype " + std::string(c10::toString(t.scalar_type())) + " to .npy");

  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 ? "," : (i + 1 < t.dim() ? ", " : ""));
  shape += ")";
  std::string header = "{'descr': '" + std::string(dtype->descr) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces and end with '\n' so the data starts on a 64-byte boundary, as NumPy does.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';

  std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write " + path);
    out.write("\x93NUMPY\x01\x00", 8);
    char len[2] = {static_cast<char>(header.size() & 0xFF), static_cast<char>((header.size() >> 8) & 0xFF)};
    out.write(len, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    if (!out) throw Error("cannot write " + path + " (disk full?)");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace zoo::npy
