// Draws one image from an exported zoo generator (e.g. vae's decoder) and writes it as PGM/PPM:
//   generate_image decoder.cpu.pt2 digit.pgm [SEED] [LABEL]     (or decoder.torchscript)
// Float inputs get N(0, 1) noise; integer inputs (a conditional generator's class) get LABEL.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <fstream>
#include <iostream>

#include "zoo_json.hpp"  // any JSON reader will do; this one ships with zoo-run

int main(int argc, char** argv) try {
  if (argc < 3) return std::cerr << "usage: generate_image MODEL.pt2|MODEL.torchscript OUT.pgm [SEED] [LABEL]\n", 2;
  std::string path = argv[1], metadata;  // metadata: the zoo.json document inside every zoo export
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> pt2;
  torch::jit::Module script;
  if (path.ends_with(".pt2")) {
    pt2 = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
    metadata = pt2->get_metadata()["zoo.json"];
  } else {
    torch::jit::ExtraFilesMap extra{{"zoo.json", ""}};
    script = torch::jit::load(path, torch::kCPU, extra);
    metadata = extra["zoo.json"];
  }
  zoo::json::Value meta = zoo::json::parse(metadata), out = meta["outputs"].array()[0];
  torch::manual_seed(argc > 3 ? std::stoll(argv[3]) : 0);
  torch::InferenceMode inference;
  std::vector<torch::Tensor> inputs;
  for (const auto& spec : meta["inputs"].array()) {
    std::vector<int64_t> shape;  // e.g. ["batch", 20] -> (1, 20): one sample
    for (const auto& dim : spec["shape"].array()) shape.push_back(dim.is_number() ? dim.number() : 1);
    bool noise = spec["dtype"].string().starts_with("float");
    inputs.push_back(noise ? torch::randn(shape) : torch::full(shape, argc > 4 ? std::stoll(argv[4]) : 0, torch::kLong));
  }
  torch::Tensor image;  // the first output, (1, C, H, W)
  if (pt2) {
    image = pt2->run(inputs)[0];
  } else {
    torch::IValue result = script.forward(std::vector<torch::IValue>(inputs.begin(), inputs.end()));
    image = result.isTuple() ? result.toTupleRef().elements()[0].toTensor() : result.toTensor();
  }
  // The metadata says which values mean black and white, e.g. [0, 1] or [-1, 1].
  double lo = out.has("value_range") ? out["value_range"].array()[0].number() : 0.0;
  double hi = out.has("value_range") ? out["value_range"].array()[1].number() : 1.0;
  torch::Tensor pixels = ((image[0] - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch::kUInt8).permute({1, 2, 0}).contiguous();
  std::ofstream file(argv[2], std::ios::binary);  // (H, W, C) bytes after a PGM (C=1) or PPM (C=3) header
  file << (pixels.size(2) == 1 ? "P5" : "P6") << "\n" << pixels.size(1) << " " << pixels.size(0) << "\n255\n";
  file.write(reinterpret_cast<const char*>(pixels.data_ptr<uint8_t>()), pixels.numel());
  return file ? 0 : 1;
} catch (const c10::Error& e) {  // libtorch errors carry a C++ backtrace; show only the message
  return std::cerr << "generate_image: " << e.what_without_backtrace() << "\n", 1;
} catch (const std::exception& e) {
  return std::cerr << "generate_image: " << e.what() << "\n", 1;
}
