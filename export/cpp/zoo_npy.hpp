// Reading and writing NumPy `.npy` files (format versions 1-3, little-endian, C order) as torch tensors.
// The format: magic "\x93NUMPY", version, header length, a Python-dict header
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }, then the raw array bytes.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
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

inline torch::Tensor read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + " not found");
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
