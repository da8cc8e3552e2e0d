// zoo-run: runs a zoo export (.torchscript or .pt2) on .npy input files and writes .npy outputs.
//
//   zoo-run MODEL [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR] [--device cpu|cuda]
//           [--threads N] [--repeat N] [--warmup N] [--metadata]
//
// Input NAME is read from NAME=FILE.npy when given, otherwise from DIR/NAME.npy (DIR defaults to
// "."); each output is written to --outputs DIR/NAME.npy. Names, dtypes and shapes come from the
// model's zoo.json metadata; an integer input outside its declared value_range is refused. On
// success one JSON line on stdout describes the outputs (and, with --repeat N, the median latency
// of N runs after --warmup runs, excluding model load and file I/O).
// Any failure prints one line "zoo-run: ..." on stderr; exit 1, or 2 for bad arguments.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "zoo_model.hpp"

namespace {

const char* const kUsage =
    "usage: zoo-run MODEL [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR] [--device cpu|cuda] "
    "[--threads N] [--repeat N] [--warmup N] [--metadata]";

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
    } else if (a == "--outputs") {
      o.outputs_dir = value();
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
  // The profiling TorchScript executor specializes during its first runs: keep them out of the timing.
  if (o.warmup < 0) o.warmup = o.repeat > 0 ? 3 : 0;
  return o;
}

std::string join(const std::string& dir, const std::string& file) { return (std::filesystem::path(dir) / file).string(); }

int run(const Options& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  zoo::Model model = zoo::Model::load(o.model, o.device);
  if (o.metadata) {
    std::cout << model.metadata_text() << "\n";
    return 0;
  }

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
