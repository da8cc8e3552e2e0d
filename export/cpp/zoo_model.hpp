// A zoo artifact in C++: a TorchScript file or an AOTInductor `.pt2` package, its `zoo.json`
// metadata, and input checks against that metadata. Every failure is a `zoo::Error` whose
// message is one line a user can act on.
#pragma once

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <stdlib.h>  // mkdtemp, setenv

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "zoo_json.hpp"
#include "zoo_npy.hpp"

namespace zoo {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The first non-empty line of an exception message: libtorch errors carry C++ backtraces below it.
inline std::string first_line(const std::string& message) {
  std::istringstream lines(message);
  std::string line;
  while (std::getline(lines, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) return line;
  return message;
}

// What went wrong, in one line. An error inside the TorchScript interpreter reads "The following
// operation failed in the TorchScript interpreter." then a TorchScript traceback (one or two: the
// serialized code, the original code) whose frames are indented; the real cause, such as
// "RuntimeError: index out of range in self", is the first unindented line after the last one.
inline std::string error_cause(const std::string& message) {
  std::istringstream lines(message);
  std::string line, cause;
  bool in_traceback = false;
  while (std::getline(lines, line)) {
    if (line.rfind("Exception raised from", 0) == 0) break;  // a C++ backtrace follows
    if (line.rfind("Traceback of TorchScript", 0) == 0) {
      in_traceback = true;
      cause.clear();
    } else if (in_traceback && cause.empty() && !line.empty() && line[0] != ' ' && line[0] != '\t' &&
               line.find_first_not_of(" \t\r") != std::string::npos) {
      cause = line;
    }
  }
  while (!cause.empty() && (cause.back() == '\r' || cause.back() == ' ')) cause.pop_back();
  return cause.empty() ? first_line(message) : cause;
}

inline std::string first_line(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return error_cause(c10->what_without_backtrace());
  return error_cause(std::string(e.what()));
}

enum class Format { TorchScript, Pt2 };

// One input or output as the metadata describes it. A dimension is a number (fixed) or a
// name such as "batch" (dynamic; equal names must have equal sizes across the inputs).
struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<std::variant<int64_t, std::string>> shape;
  // For integer tensors (class labels, token ids): the inclusive range of valid values.
  std::optional<std::pair<int64_t, int64_t>> value_range;

  std::string shape_text() const {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
      if (i) out += ", ";
      out += std::holds_alternative<int64_t>(shape[i]) ? std::to_string(std::get<int64_t>(shape[i])) : std::get<std::string>(shape[i]);
    }
    return out + "]";
  }
};

inline std::string sizes_text(const torch::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) out += (i ? ", " : "") + std::to_string(t.size(i));
  return out + "]";
}

inline std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

// What kind of file `path` is, judged by its content (the extension may lie).
inline Format detect_format(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(path + " not found");
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + " is not a file");
  std::ifstream in(path, std::ios::binary);
  char head[4] = {};
  in.read(head, 4);
  if (in.gcount() < 4 || std::string(head, 4) != std::string("PK\x03\x04", 4)) {
    // ONNX files are protobuf messages; the first field of a ModelProto is ir_version (tag 0x08).
    if (in.gcount() >= 1 && head[0] == 0x08)
      throw Error(file_name(path) + " looks like an ONNX model: zoo-run runs .torchscript and .pt2 files; run .onnx with ONNX Runtime");
    throw Error(file_name(path) + " is not a TorchScript or .pt2 file (not a zip archive)");
  }
  std::vector<std::string> records;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    records = reader.getAllRecords();
  } catch (const std::exception& e) {
    throw Error(file_name(path) + " is not a readable TorchScript or .pt2 archive (truncated or corrupt?): " + first_line(e));
  }
  auto has = [&](const std::string& prefix) {
    return std::any_of(records.begin(), records.end(), [&](const std::string& r) { return r.rfind(prefix, 0) == 0; });
  };
  if (has("archive_format")) {
    if (!has("data/aotinductor/"))
      throw Error(file_name(path) + " is a torch.export program without AOTInductor code: package it with torch._inductor.aoti_compile_and_package");
    return Format::Pt2;
  }
  if (has("code/") && has("data.pkl")) return Format::TorchScript;
  if (has("data.pkl"))
    throw Error(file_name(path) + " is a torch.save file (a checkpoint?), not an exported model: export it with `zoo export`");
  throw Error(file_name(path) + " is a zip archive but neither TorchScript nor .pt2");
}

// CPU flags (from /proc/cpuinfo) that the vector ISA names AOTInductor records need.
inline std::vector<std::string> isa_flags(const std::string& isa_word) {
  if (isa_word == "AVX2") return {"avx2", "fma"};
  if (isa_word == "AVX512") return {"avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"};
  if (isa_word == "AVX512_VNNI") return {"avx512_vnni"};
  if (isa_word == "AMX_TILE") return {"amx_tile", "amx_bf16", "amx_int8"};
  return {};
}

inline std::set<std::string> host_cpu_flags() {
  std::set<std::string> flags;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    while (words >> w) flags.insert(w);
    break;
  }
  return flags;
}

// A private temporary directory, removed with everything in it when the last owner goes.
// AOTIModelPackageLoader unpacks a package under $TMPDIR and leaves that behind when loading
// fails; pointing $TMPDIR here while it loads means nothing outlives zoo-run.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "zoo-run-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw Error("cannot create a temporary directory under " + pattern);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Sets an environment variable for the lifetime of this object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

inline std::string host_machine() {
#if defined(__x86_64__) || defined(_M_X64)
  return "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  return "aarch64";
#else
  return "";
#endif
}

class Model {
 public:
  // Loads `path`. `device` is "cpu" or "cuda"; empty means the device a .pt2 was compiled for,
  // and CPU for TorchScript.
  static Model load(const std::string& path, const std::string& device = "") {
    Model m;
    m.path_ = path;
    m.format_ = detect_format(path);
    if (m.format_ == Format::TorchScript)
      m.load_torchscript(device);
    else
      m.load_pt2(device);
    return m;
  }

  Format format() const { return format_; }
  const std::string& device() const { return device_; }
  const std::string& metadata_text() const { return metadata_text_; }
  const json::Value& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& inputs() const { return inputs_; }
  const std::vector<TensorInfo>& outputs() const { return outputs_; }

  // Orders `given` (name -> tensor) as the model's inputs and checks each against the metadata:
  // present, dtype, rank, fixed dimensions, equal sizes for equally named dynamic dimensions, and
  // integers inside their declared value_range.
  std::vector<torch::Tensor> check_inputs(const std::map<std::string, torch::Tensor>& given) const {
    for (const auto& [name, tensor] : given) {
      bool known = std::any_of(inputs_.begin(), inputs_.end(), [&](const TensorInfo& i) { return i.name == name; });
      if (!known) throw Error("unknown input '" + name + "': " + file_name(path_) + " takes " + input_names());
    }
    std::vector<torch::Tensor> ordered;
    std::map<std::string, std::pair<int64_t, std::string>> named_dims;  // axis name -> (size, input that set it)
    for (const auto& spec : inputs_) {
      auto it = given.find(spec.name);
      if (it == given.end()) throw Error("missing input '" + spec.name + "': " + file_name(path_) + " takes " + input_names());
      const torch::Tensor& t = it->second;
      std::string got = npy::dtype_name(t.scalar_type());
      if (got != spec.dtype) throw Error("input '" + spec.name + "' must be " + spec.dtype + ", got " + got);
      if (t.dim() != static_cast<int64_t>(spec.shape.size()))
        throw Error("input '" + spec.name + "' must have shape " + spec.shape_text() + " (rank " + std::to_string(spec.shape.size()) +
                    "), got " + sizes_text(t));
      for (size_t d = 0; d < spec.shape.size(); ++d) {
        int64_t size = t.size(static_cast<int64_t>(d));
        if (const auto* fixed = std::get_if<int64_t>(&spec.shape[d])) {
          if (size != *fixed)
            throw Error("input '" + spec.name + "' must have shape " + spec.shape_text() + ", got " + sizes_text(t) + " (dimension " +
                        std::to_string(d) + " must be " + std::to_string(*fixed) + ")");
          continue;
        }
        const std::string& axis = std::get<std::string>(spec.shape[d]);
        if (size < 1) throw Error("input '" + spec.name + "' has an empty '" + axis + "' dimension");
        auto [seen, inserted] = named_dims.emplace(axis, std::make_pair(size, spec.name));
        if (!inserted && seen->second.first != size)
          throw Error("input '" + spec.name + "' has " + axis + " " + std::to_string(size) + " but input '" + seen->second.second + "' has " +
                      axis + " " + std::to_string(seen->second.first));
      }
      check_range(spec, t);
      ordered.push_back(t);
    }
    return ordered;
  }

  // An integer outside its declared range would index another row of an embedding (ONNX
  // wraps -1 to the last one) or read past its end: refuse it by name and value.
  static void check_range(const TensorInfo& spec, const torch::Tensor& t) {
    if (!spec.value_range || t.numel() == 0) return;
    auto [lo, hi] = *spec.value_range;
    int64_t smallest = t.min().item<int64_t>(), largest = t.max().item<int64_t>();
    if (smallest < lo || largest > hi)
      throw Error("input '" + spec.name + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                  std::to_string(smallest < lo ? smallest : largest));
  }

  // Runs the model on inputs ordered as `inputs()`; returns the outputs in the order of `outputs()`.
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) const {
    c10::InferenceMode inference;
    std::vector<torch::Tensor> outs;
    try {
      if (format_ == Format::TorchScript) {
        std::vector<torch::jit::IValue> args;
        for (const auto& t : inputs) args.emplace_back(t.to(torch::Device(device_)));
        torch::jit::IValue result = module_->forward(args);
        flatten(result, outs);
      } else {
        std::vector<torch::Tensor> on_device;
        for (const auto& t : inputs) on_device.push_back(t.to(torch::Device(device_)).contiguous());
        outs = package_->run(on_device);
      }
    } catch (const std::exception& e) {
      throw Error("running " + file_name(path_) + " failed: " + first_line(e));
    }
    if (outs.size() != outputs_.size())
      throw Error(file_name(path_) + " returned " + std::to_string(outs.size()) + " outputs but its metadata names " +
                  std::to_string(outputs_.size()));
    return outs;
  }

  // Waits for queued device work, so a timer stops after the model really finished.
  void synchronize() const {
    if (device_ == "cuda") torch::cuda::synchronize();
  }

 private:
  std::string path_;
  Format format_ = Format::TorchScript;
  std::string device_;
  std::string metadata_text_;
  json::Value metadata_;
  std::vector<TensorInfo> inputs_, outputs_;
  std::shared_ptr<torch::jit::Module> module_;
  std::shared_ptr<ScratchDir> scratch_;  // declared before package_, so it is removed after the loader
  std::shared_ptr<torch::inductor::AOTIModelPackageLoader> package_;

  void load_torchscript(const std::string& device) {
    device_ = device.empty() ? "cpu" : device;
    check_device_exists();
    torch::jit::ExtraFilesMap extra{{"zoo.json", ""}};
    try {
      module_ = std::make_shared<torch::jit::Module>(torch::jit::load(path_, torch::Device(device_), extra));
    } catch (const std::exception& e) {
      throw Error("cannot load " + file_name(path_) + ": " + first_line(e));
    }
    module_->eval();
    parse_metadata(extra["zoo.json"]);
  }

  void load_pt2(const std::string& device) {
    // The metadata is read from the archive first, so a package this machine cannot run is
    // refused before any of its code is loaded.
    std::unordered_map<std::string, std::string> aoti;
    try {
      aoti = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path_, "model");
    } catch (const std::exception& e) {
      throw Error("cannot read the metadata of " + file_name(path_) + ": " + first_line(e));
    }
    parse_metadata(aoti.count("zoo.json") ? aoti["zoo.json"] : "");
    check_pt2_compatible(aoti, device);
    scratch_ = std::make_shared<ScratchDir>();
    try {
      ScopedEnv tmpdir("TMPDIR", scratch_->path());
      package_ = std::make_shared<torch::inductor::AOTIModelPackageLoader>(path_, "model");
    } catch (const std::exception& e) {
      throw Error("cannot load " + file_name(path_) + ": " + first_line(e));
    }
  }

  std::string input_names() const {
    std::string out;
    for (const auto& i : inputs_) out += (out.empty() ? "" : ", ") + i.name + " " + i.shape_text() + " " + i.dtype;
    return out;
  }

  void check_device_exists() const {
    if (device_ != "cpu" && device_ != "cuda") throw Error("unknown device '" + device_ + "' (use cpu or cuda)");
    if (device_ == "cuda" && !torch::cuda::is_available()) throw Error("--device cuda: this machine has no CUDA device");
  }

  // A .pt2 holds machine code for one device, OS, architecture and CPU vector ISA: refuse a
  // mismatch with a sentence rather than let the loader fail deep inside or the CPU trap.
  void check_pt2_compatible(const std::unordered_map<std::string, std::string>& aoti, const std::string& requested) {
    auto get = [&](const char* key) { return aoti.count(key) ? aoti.at(key) : std::string(); };
    std::string compiled = get("AOTI_DEVICE_KEY");
    std::string declared = metadata_.string_or("device", "");
    if (compiled.empty()) compiled = declared.empty() ? "cpu" : declared;
    const std::string name = file_name(path_);
    for (const std::string& d : {compiled, declared}) {
      if (d == "cuda" && !torch::cuda::is_available())
        throw Error(name + " was compiled for CUDA and this machine has no CUDA device: export a .pt2 for cpu to run it here");
    }
    if (compiled != "cpu" && compiled != "cuda") throw Error(name + " was compiled for device '" + compiled + "', which zoo-run does not run");
    device_ = requested.empty() ? compiled : requested;
    check_device_exists();
    if (device_ != compiled) throw Error(name + " was compiled for " + compiled + " and cannot run on " + device_ + ": export a .pt2 for " + device_);
#if defined(__linux__)
    if (!get("AOTI_PLATFORM").empty() && get("AOTI_PLATFORM") != "linux")
      throw Error(name + " was compiled for " + get("AOTI_PLATFORM") + ", not linux: export it on this kind of machine");
#endif
    std::string machine = host_machine();
    if (!get("AOTI_MACHINE").empty() && !machine.empty() && get("AOTI_MACHINE") != machine)
      throw Error(name + " was compiled for " + get("AOTI_MACHINE") + " CPUs, this one is " + machine + ": export it on this kind of machine");
    if (compiled == "cpu" && machine == "x86_64" && !get("AOTI_CPU_ISA").empty()) {
      std::set<std::string> have = host_cpu_flags();
      std::istringstream words(get("AOTI_CPU_ISA"));
      std::string word;
      while (!have.empty() && words >> word)
        for (const auto& flag : isa_flags(word))
          if (!have.count(flag))
            throw Error(name + " was compiled for CPU vector ISA " + get("AOTI_CPU_ISA") + " but this CPU lacks " + flag +
                        ": export the .pt2 on a machine like this one");
    }
  }

  void parse_metadata(const std::string& text) {
    const std::string name = file_name(path_);
    if (text.empty()) throw Error(name + " has no zoo.json metadata: zoo-run runs models written by `zoo export`");
    metadata_text_ = text;
    try {
      metadata_ = json::parse(text);
      inputs_ = parse_specs(metadata_["inputs"]);
      outputs_ = parse_specs(metadata_["outputs"]);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(name + " has unreadable zoo.json metadata: " + e.what());
    }
    if (inputs_.empty()) throw Error(name + ": its zoo.json metadata lists no inputs");
  }

  static std::vector<TensorInfo> parse_specs(const json::Value& list) {
    std::vector<TensorInfo> specs;
    for (const auto& item : list.array()) {
      TensorInfo info{item["name"].string(), item["dtype"].string(), {}};
      if (!npy::scalar_type_named(info.dtype)) throw Error("metadata names an unsupported dtype '" + info.dtype + "' for '" + info.name + "'");
      if (item.has("shape"))
        for (const auto& dim : item["shape"].array()) {
          if (dim.is_number())
            info.shape.emplace_back(static_cast<int64_t>(dim.number()));
          else
            info.shape.emplace_back(dim.string());
        }
      bool integer = info.dtype.rfind("int", 0) == 0 || info.dtype == "uint8";
      if (integer && item.has("value_range") && item["value_range"].is_array() && item["value_range"].array().size() == 2) {
        const auto& range = item["value_range"].array();
        info.value_range = std::make_pair(static_cast<int64_t>(range[0].number()), static_cast<int64_t>(range[1].number()));
      }
      specs.push_back(std::move(info));
    }
    return specs;
  }

  static void flatten(const torch::jit::IValue& value, std::vector<torch::Tensor>& out) {
    if (value.isTensor()) {
      out.push_back(value.toTensor());
    } else if (value.isTuple()) {
      for (const auto& v : value.toTupleRef().elements()) flatten(v, out);
    } else if (value.isList()) {
      for (const auto& v : value.toListRef()) flatten(v, out);
    } else {
      throw Error("the model returned a " + value.tagKind() + ", not tensors");
    }
  }
};

}  // namespace zoo
