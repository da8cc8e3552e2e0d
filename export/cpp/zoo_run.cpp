// zoo-run: runs a zoo export (.torchscript or .pt2) on .npy input files and writes .npy outputs.
//
//   zoo-run MODEL [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR] [--device cpu|cuda]
//           [--threads N] [--repeat N] [--warmup N] [--metadata]
//   zoo-run MODEL --self-test [--outputs DIR] [--device cpu|cuda] [--threads N]
//
// Input NAME is read from NAME=FILE.npy when given, otherwise from DIR/NAME.npy (DIR defaults to
// "."); each output is written to --outputs DIR/NAME.npy. Names, dtypes and shapes come from the
// model's zoo.json metadata; an integer input outside its declared value_range is refused. On
// success one JSON line on stdout describes the outputs (and, with --repeat N, the median latency
// of N runs after --warmup runs, excluding model load and file I/O).
// --self-test runs the model on the test vectors its metadata names (seeded inputs and eager
// PyTorch's outputs, .npy files beside it, pinned by sha256) and compares the outputs with the
// stored tolerances: |got - expected| <= atol + rtol * |expected|, integers exactly. One JSON line
// on stdout gives the verdict and the worst difference; exit 0 when every output matches, else 1.
// Any failure prints one line "zoo-run: ..." on stderr; exit 1, or 2 for bad arguments.

#include <torch/version.h>

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "zoo_model.hpp"

namespace {

const char* const kUsage =
    "usage: zoo-run MODEL [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR] [--device cpu|cuda] "
    "[--threads N] [--repeat N] [--warmup N] [--metadata] [--self-test]";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string model;
  std::string inputs_dir = ".";
  std::string outputs_dir = ".";
  std::string device;
  std::map<std::string, std::string> input_files;
  int threads = 0;
  int repeat = 0;
  int warmup = -1;
  bool metadata = false;
  bool self_test = false;
  bool inputs_given = false;   // --inputs
  bool outputs_given = false;  // --outputs
};

int parse_count(const std::string& flag, const std::string& text, int minimum) {
  try {
    size_t used = 0;
    int n = std::stoi(text, &used);
    if (used == text.size() && n >= minimum) return n;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + " needs an integer >= " + std::to_string(minimum) + ", got '" + text + "'");
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage << "\n";
      std::exit(0);
    } else if (a == "--inputs") {
      o.inputs_dir = value();
      o.inputs_given = true;
    } else if (a == "--outputs") {
      o.outputs_dir = value();
      o.outputs_given = true;
    } else if (a == "--device") {
      o.device = value();
      if (o.device != "cpu" && o.device != "cuda") throw UsageError("--device must be cpu or cuda, got '" + o.device + "'");
    } else if (a == "--threads") {
      o.threads = parse_count(a, value(), 1);
    } else if (a == "--repeat") {
      o.repeat = parse_count(a, value(), 1);
    } else if (a == "--warmup") {
      o.warmup = parse_count(a, value(), 0);
    } else if (a == "--metadata") {
      o.metadata = true;
    } else if (a == "--self-test") {
      o.self_test = true;
    } else if (a.rfind("--", 0) == 0) {
      throw UsageError("unknown option " + a);
    } else if (o.model.empty()) {
      o.model = a;
    } else if (auto eq = a.find('='); eq != std::string::npos && eq > 0) {
      o.input_files[a.substr(0, eq)] = a.substr(eq + 1);
    } else {
      throw UsageError("unexpected argument '" + a + "' (inputs are given as NAME=FILE.npy)");
    }
  }
  if (o.model.empty()) throw UsageError("no MODEL given");
  if (o.self_test && (o.inputs_given || !o.input_files.empty() || o.repeat > 0 || o.metadata))
    throw UsageError("--self-test reads the inputs the model's test vectors name; it takes no NAME=FILE, --inputs, --repeat or --metadata");
  // The profiling TorchScript executor specializes during its first runs: keep them out of the timing.
  if (o.warmup < 0) o.warmup = o.repeat > 0 ? 3 : 0;
  return o;
}

std::string join(const std::string& dir, const std::string& file) { return (std::filesystem::path(dir) / file).string(); }

// [1, 0, 3, 5]
std::string index_text(const std::vector<int64_t>& index) {
  std::string out = "[";
  for (size_t d = 0; d < index.size(); ++d) out += (d ? ", " : "") + std::to_string(index[d]);
  return out + "]";
}

// ------------------------------------------------------------------------------------ --self-test

// One test vector as the metadata names it: a .npy file beside the model, pinned by its sha256.
struct Vector {
  std::string name, path, sha256;
};

std::vector<Vector> vectors_named(const zoo::json::Value& section, const std::string& kind) {
  std::vector<Vector> out;
  if (!section.has(kind)) throw zoo::Error("the model's test_vectors metadata lists no " + kind);
  try {
    for (const auto& item : section[kind].array()) out.push_back({item["name"].string(), item["path"].string(), item["sha256"].string()});
  } catch (const std::runtime_error& e) {
    throw zoo::Error(std::string("the model's test_vectors metadata is unreadable: ") + e.what());
  }
  return out;
}

// The vector's array, read from beside the model after its bytes are checked against the metadata.
torch::Tensor read_vector(const std::string& model_path, const Vector& v) {
  std::filesystem::path relative(v.path);
  bool inside = !relative.empty() && relative.is_relative() &&
                std::none_of(relative.begin(), relative.end(), [](const std::filesystem::path& part) { return part == ".."; });
  if (!inside) throw zoo::Error("the metadata names test vector '" + v.path + "', which is not a path inside the export directory");
  std::string file = (std::filesystem::path(model_path).parent_path() / relative).string();
  if (!std::filesystem::is_regular_file(file))
    throw zoo::Error("test vector " + file + " not found: copy the export's " + relative.begin()->string() + "/ directory beside " +
                     zoo::file_name(model_path));
  std::string bytes = zoo::npy::read_bytes(file);
  std::string actual = zoo::npy::sha256(bytes);
  if (actual != v.sha256)
    throw zoo::Error("test vector " + file + " was modified after export (sha256 " + actual.substr(0, 12) + "..., the metadata says " +
                     v.sha256.substr(0, 12) + "...)");
  std::istringstream in(bytes);
  try {
    return zoo::npy::read(in, file);
  } catch (const zoo::npy::Error& e) {
    throw zoo::Error(std::string("test vector ") + e.what());
  }
}

// How one output compares with its vector. `ratio` is the worst |diff| / (atol + rtol * |expected|):
// above 1 fails (for integers any difference is infinitely over).
struct Verdict {
  std::string name;
  bool passed = true;
  std::string reason;  // why it failed, when it is not a difference in values
  double max_abs = 0, max_rel = 0, ratio = 0;
  std::vector<int64_t> index;  // of the worst element
  double got = 0, expected = 0, allowed = 0;
};

Verdict compare(const std::string& name, const torch::Tensor& output, const torch::Tensor& vector, double rtol, double atol) {
  Verdict v{name};
  torch::Tensor got = output.detach().to(torch::kCPU).contiguous();
  if (got.sizes() != vector.sizes()) {
    v.passed = false;
    v.reason = "output '" + name + "' has shape " + zoo::sizes_text(got) + ", its test vector " + zoo::sizes_text(vector);
    return v;
  }
  if (got.scalar_type() != vector.scalar_type()) {
    v.passed = false;
    v.reason = "output '" + name + "' is " + zoo::npy::dtype_name(got.scalar_type()) + ", its test vector " +
               zoo::npy::dtype_name(vector.scalar_type());
    return v;
  }
  if (vector.numel() == 0) return v;
  bool floating = at::isFloatingType(vector.scalar_type());
  torch::Tensor g = got.to(torch::kDouble).flatten(), w = vector.to(torch::kDouble).flatten();
  torch::Tensor nan = w.isnan();
  if (floating && !torch::equal(nan, g.isnan())) {
    v.passed = false;
    v.reason = "output '" + name + "' is NaN where its test vector is not (or the reverse)";
    return v;
  }
  torch::Tensor same = (g == w) | nan;  // equal infinities too, whose difference would be NaN
  torch::Tensor diff = (g - w).abs().masked_fill(same, 0.0);
  torch::Tensor scale = w.abs().masked_fill(nan, 0.0);
  torch::Tensor allowed = floating ? atol + rtol * scale : torch::zeros_like(scale);
  const double inf = std::numeric_limits<double>::infinity();
  torch::Tensor ratio = torch::where(allowed > 0, diff / allowed, torch::where(diff > 0, inf, 0.0)).masked_fill(same, 0.0);
  v.passed = ((diff <= allowed) | same).all().item<bool>();
  v.max_abs = diff.max().item<double>();
  torch::Tensor big = scale > atol;
  if (floating && big.any().item<bool>()) v.max_rel = (diff.masked_select(big) / scale.masked_select(big)).max().item<double>();
  int64_t worst = ratio.argmax().item<int64_t>();
  v.ratio = ratio[worst].item<double>();
  v.got = g[worst].item<double>();
  v.expected = w[worst].item<double>();
  v.allowed = allowed[worst].item<double>();
  v.index.assign(static_cast<size_t>(got.dim()), 0);
  for (int64_t d = got.dim() - 1, rest = worst; d >= 0; --d) {
    v.index[static_cast<size_t>(d)] = rest % got.size(d);
    rest /= got.size(d);
  }
  return v;
}

std::string short_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

// On CUDA, fp32 means fp32: TF32 would keep 10 mantissa bits, which no fp32 tolerance survives
// (as in `zoo export`'s parity checks).
void strict_fp32() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  for (auto op : {at::Float32Op::ALL, at::Float32Op::CONV, at::Float32Op::RNN, at::Float32Op::MATMUL})
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, op, at::Float32Precision::IEEE);
#else
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
#endif
}

int self_test(const Options& o, const zoo::Model& model) {
  const zoo::json::Value& meta = model.metadata();
  if (!meta.has("test_vectors") || !meta["test_vectors"].is_object())
    throw zoo::Error(zoo::file_name(o.model) + " names no test vectors in its metadata: export it again with `zoo export` to self-test it");
  const zoo::json::Value& section = meta["test_vectors"];
  auto tolerance = [&](const char* key, double fallback) {
    if (section.has(key) && section[key].is_number()) return section[key].number();
    return meta.has(key) && meta[key].is_number() ? meta[key].number() : fallback;
  };
  double rtol = tolerance("rtol", 1e-4), atol = tolerance("atol", 1e-5);

  std::map<std::string, torch::Tensor> given;
  for (const Vector& v : vectors_named(section, "inputs")) given[v.name] = read_vector(o.model, v);
  std::map<std::string, torch::Tensor> expected;
  for (const Vector& v : vectors_named(section, "outputs")) expected[v.name] = read_vector(o.model, v);
  for (const auto& spec : model.outputs())
    if (!expected.count(spec.name)) throw zoo::Error("the model's test vectors have no output '" + spec.name + "'");

  std::vector<torch::Tensor> inputs = model.check_inputs(given);
  if (model.device() == "cuda") strict_fp32();
  std::vector<torch::Tensor> outputs = model.run(inputs);
  if (o.outputs_given) {
    std::filesystem::create_directories(o.outputs_dir);
    for (size_t i = 0; i < outputs.size(); ++i) zoo::npy::write(join(o.outputs_dir, model.outputs()[i].name + ".npy"), outputs[i]);
  }

  std::vector<Verdict> verdicts;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = model.outputs()[i].name;
    verdicts.push_back(compare(name, outputs[i], expected[name], rtol, atol));
  }
  // The worst output: the first that failed for a reason other than values, else the largest ratio.
  const Verdict* worst = nullptr;
  for (const auto& v : verdicts) {
    if (!v.reason.empty()) {
      worst = &v;
      break;
    }
    if (worst == nullptr || v.ratio > worst->ratio) worst = &v;
  }
  bool passed = std::all_of(verdicts.begin(), verdicts.end(), [](const Verdict& v) { return v.passed; });
  double max_abs = 0, max_rel = 0;
  for (const auto& v : verdicts) max_abs = std::max(max_abs, v.max_abs), max_rel = std::max(max_rel, v.max_rel);

  using zoo::json::number;
  using zoo::json::quote;
  std::string format = model.format() == zoo::Format::Pt2 ? "pt2" : "torchscript";
  std::string line = "{\"runtime\": \"zoo-run\", \"format\": \"" + format + "\", \"device\": \"" + model.device() +
                     "\", \"self_test\": \"" + (passed ? "passed" : "failed") + "\", \"rtol\": " + number(rtol) +
                     ", \"atol\": " + number(atol) + ", \"max_abs\": " + number(max_abs) + ", \"max_rel\": " + number(max_rel) +
                     ", \"worst\": {\"output\": " + quote(worst->name);
  if (worst->reason.empty())
    line += ", \"index\": " + index_text(worst->index) + ", \"got\": " + number(worst->got) + ", \"expected\": " + number(worst->expected);
  line += "}, \"outputs\": [";
  for (size_t i = 0; i < verdicts.size(); ++i) {
    const Verdict& v = verdicts[i];
    line += std::string(i ? ", " : "") + "{\"name\": " + quote(v.name) + ", \"shape\": " + zoo::sizes_text(outputs[i]) +
            ", \"dtype\": \"" + zoo::npy::dtype_name(outputs[i].scalar_type()) + "\", \"max_abs\": " + number(v.max_abs) +
            ", \"max_rel\": " + number(v.max_rel) + ", \"passed\": " + (v.passed ? "true" : "false") +
            (v.reason.empty() ? "" : ", \"reason\": " + quote(v.reason)) + "}";
  }
  std::cout << line << "]}" << std::endl;
  if (passed) return 0;

  std::string why = worst->reason;
  if (why.empty())
    why = "output '" + worst->name + "' differs from its test vector at " + index_text(worst->index) + ": got " +
          short_number(worst->got) + ", expected " + short_number(worst->expected) + " (|diff| " +
          short_number(std::abs(worst->got - worst->expected)) + " > " + short_number(worst->allowed) + " = atol " + short_number(atol) +
          " + rtol " + short_number(rtol) + " x |expected|)";
  std::cerr << "zoo-run: self-test failed: " << why << "; max_abs " << short_number(max_abs) << ", max_rel " << short_number(max_rel)
            << "\n";
  return 1;
}

// ------------------------------------------------------------------------------------ main

int run(const Options& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  zoo::Model model = zoo::Model::load(o.model, o.device);
  if (o.metadata) {
    std::cout << model.metadata_text() << "\n";
    return 0;
  }
  if (o.self_test) return self_test(o, model);

  std::map<std::string, torch::Tensor> given;
  for (const auto& [name, file] : o.input_files) {
    bool known = std::any_of(model.inputs().begin(), model.inputs().end(), [&](const auto& spec) { return spec.name == name; });
    if (!known) {
      std::string names;
      for (const auto& spec : model.inputs()) names += (names.empty() ? "" : ", ") + spec.name;
      throw zoo::Error("unknown input '" + name + "' (the model takes " + names + ")");
    }
  }
  for (const auto& spec : model.inputs()) {
    auto it = o.input_files.find(spec.name);
    std::string file = it != o.input_files.end() ? it->second : join(o.inputs_dir, spec.name + ".npy");
    if (!std::filesystem::exists(file)) {
      std::string takes;
      for (const auto& s : model.inputs()) takes += (takes.empty() ? "" : ", ") + s.name + " " + s.shape_text() + " " + s.dtype;
      throw zoo::Error("missing input '" + spec.name + "': " + file + " not found (the model takes " + takes + ")");
    }
    try {
      given[spec.name] = zoo::npy::read(file);
    } catch (const zoo::npy::Error& e) {
      throw zoo::Error("input '" + spec.name + "': " + e.what());
    }
  }
  std::vector<torch::Tensor> inputs = model.check_inputs(given);

  std::vector<torch::Tensor> outputs;
  for (int i = 0; i < o.warmup; ++i) outputs = model.run(inputs);
  std::vector<double> times_ms;
  for (int i = 0; i < std::max(o.repeat, 1); ++i) {
    auto start = std::chrono::steady_clock::now();
    outputs = model.run(inputs);
    model.synchronize();
    times_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }

  std::filesystem::create_directories(o.outputs_dir);
  for (size_t i = 0; i < outputs.size(); ++i) zoo::npy::write(join(o.outputs_dir, model.outputs()[i].name + ".npy"), outputs[i]);

  // One JSON line on stdout says what was written (and how long a run took, with --repeat).
  std::string summary = "{\"runtime\": \"zoo-run\", \"format\": \"" +
                        std::string(model.format() == zoo::Format::Pt2 ? "pt2" : "torchscript") + "\", \"device\": \"" + model.device() +
                        "\", \"outputs\": [";
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string shape;
    for (int64_t d = 0; d < outputs[i].dim(); ++d) shape += (d ? ", " : "") + std::to_string(outputs[i].size(d));
    summary += std::string(i ? ", " : "") + "{\"name\": \"" + model.outputs()[i].name + "\", \"shape\": [" + shape + "], \"dtype\": \"" +
               zoo::npy::dtype_name(outputs[i].scalar_type()) + "\"}";
  }
  summary += "]";
  if (o.repeat > 0) {
    std::sort(times_ms.begin(), times_ms.end());
    size_t n = times_ms.size();
    double median = n % 2 ? times_ms[n / 2] : (times_ms[n / 2 - 1] + times_ms[n / 2]) / 2;
    char timing[256];
    std::snprintf(timing, sizeof timing, ", \"threads\": %d, \"warmup\": %d, \"runs\": %zu, \"median_ms\": %.6f, \"min_ms\": %.6f",
                  at::get_num_threads(), o.warmup, n, median, times_ms.front());
    summary += timing;
  }
  std::cout << summary << "}" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Keep freed memory for the next call instead of handing it back to the kernel: a model
  // allocates the same intermediate buffers every call, and glibc's defaults mmap and
  // unmap them each time (page faults on every run: an AOTInductor .pt2 of dcgan took
  // 0.93 ms a call that way, 0.57 ms this way). What an inference server does with jemalloc.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "zoo-run: " << e.what() << " (" << kUsage << ")\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "zoo-run: " << zoo::first_line(e) << "\n";
    return 1;
  }
}
