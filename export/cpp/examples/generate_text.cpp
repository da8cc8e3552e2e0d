// Continues a prompt with an exported zoo language model, greedily (the likeliest next character
// each time), and prints the prompt and its continuation, as `zoo sample PLUGIN --temperature 0` does:
//   generate_text step.cpu.pt2 "The " [LENGTH] [--threads N]      (or step.torchscript, logits.*)
// The vocabulary comes from the file's metadata (data_info.vocabulary: one character an id). A
// target with a state (rnn's `step`) reads one character at a time from a zero state, feeding each
// `next_state` back as `state`; a target without one (transformer's `logits`) reads a sliding window
// of the last max_sizes[seq] characters and takes the last position's logits.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "zoo_model.hpp"  // zoo::Model: loads .torchscript or .pt2, reads zoo.json, checks inputs

namespace {

const char* const kUsage = "usage: generate_text MODEL.pt2|MODEL.torchscript PROMPT [LENGTH] [--threads N]";

// The code points of UTF-8 `text`, each as its own UTF-8 bytes; one line naming the first bad byte.
std::vector<std::string> characters(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    unsigned char lead = byte(i);
    size_t n = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= text.size();
    unsigned cp = n == 1 ? lead : n == 2 ? lead & 0x1F : n == 3 ? lead & 0x0F : lead & 0x07;
    for (size_t k = 1; ok && k < n; ++k) {
      ok = (byte(i + k) & 0xC0) == 0x80;
      cp = (cp << 6) | (byte(i + k) & 0x3F);
    }
    static const unsigned smallest[] = {0, 0, 0x80, 0x800, 0x10000};  // shorter forms are overlong
    if (!ok || cp < smallest[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
      throw zoo::Error("the prompt is not UTF-8 text (byte " + std::to_string(i) + ")");
    out.push_back(text.substr(i, n));
    i += n;
  }
  return out;
}

// How a character is named in an error: itself in quotes, or U+XXXX for control characters.
std::string shown(const std::string& c) {
  unsigned char b = static_cast<unsigned char>(c[0]);
  if (c.size() == 1 && (b < 0x20 || b == 0x7F)) {
    char code[8];
    std::snprintf(code, sizeof code, "U+%04X", b);
    return code;
  }
  return "'" + c + "'";
}

// The index of the largest of `vocab` scores; the lowest index among equal ones, and the first NaN
// if any, as torch.argmax picks (so every runtime breaks ties the same way).
int64_t likeliest(const torch::Tensor& logits, size_t vocab) {
  torch::Tensor row = logits.to(torch::kCPU, torch::kFloat).contiguous().reshape({-1});
  if (row.numel() != static_cast<int64_t>(vocab))
    throw zoo::Error("the model gives " + std::to_string(row.numel()) + " scores for a vocabulary of " + std::to_string(vocab));
  const float* v = row.data_ptr<float>();
  int64_t best = 0;
  for (int64_t i = 1; i < row.numel() && !std::isnan(v[best]); ++i)
    if (std::isnan(v[i]) || v[i] > v[best]) best = i;
  return best;
}

// A zero tensor shaped as the metadata describes `spec`, with every named axis ("batch") of size 1.
torch::Tensor zeros_like_spec(const zoo::TensorInfo& spec) {
  std::vector<int64_t> shape;
  for (const auto& dim : spec.shape) shape.push_back(std::holds_alternative<int64_t>(dim) ? std::get<int64_t>(dim) : 1);
  return torch::zeros(shape, torch::TensorOptions().dtype(*zoo::npy::scalar_type_named(spec.dtype)));
}

// A whole number >= `minimum` from the command line, or nothing.
std::optional<int64_t> count(const std::string& text, int64_t minimum) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  int64_t n = std::stoll(text);
  return n >= minimum ? std::optional<int64_t>(n) : std::nullopt;
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<std::string> args;
  std::optional<int64_t> threads = 0, length = 200;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads") threads = i + 1 < argc ? count(argv[++i], 1) : std::nullopt;
    else args.push_back(a);
  }
  if (args.size() == 3) length = count(args[2], 1);
  if (args.size() < 2 || args.size() > 3 || !length || !threads) return std::cerr << kUsage << "\n", 2;
  if (*threads > 0) torch::set_num_threads(static_cast<int>(*threads));

  zoo::Model model = zoo::Model::load(args[0]);  // on the CPU, or the device a .pt2 was compiled for
  const zoo::json::Value& meta = model.metadata();
  if (!meta.has("data_info") || !meta["data_info"].has("vocabulary"))
    throw zoo::Error(zoo::file_name(args[0]) + " carries no vocabulary (data_info.vocabulary in its metadata)");
  std::vector<std::string> vocabulary;  // id -> character (UTF-8)
  std::map<std::string, int64_t> ids;   // character -> id
  for (const auto& c : meta["data_info"]["vocabulary"].array()) {
    ids.emplace(c.string(), static_cast<int64_t>(vocabulary.size()));
    vocabulary.push_back(c.string());
  }

  std::vector<int64_t> text;  // the prompt's ids, then each generated one
  std::set<std::string> unknown;
  for (const std::string& c : characters(args[1])) {
    auto it = ids.find(c);
    if (it == ids.end()) unknown.insert(c);
    else text.push_back(it->second);
  }
  if (!unknown.empty()) {
    std::string names;
    for (const std::string& c : unknown) names += (names.empty() ? "" : ", ") + shown(c);
    throw zoo::Error("the prompt has characters the model's vocabulary lacks: " + names + " (it knows " +
                     std::to_string(vocabulary.size()) + " characters)");
  }
  if (text.empty()) throw zoo::Error("the prompt must hold at least one character");

  const std::vector<zoo::TensorInfo>& inputs = model.inputs();
  auto token_tensor = [](const std::vector<int64_t>& ids, size_t from) {  // ids[from:] as (1, n) int64
    return torch::tensor(std::vector<int64_t>(ids.begin() + from, ids.end()), torch::kLong).reshape({1, -1});
  };
  torch::InferenceMode inference;
  if (inputs.size() > 1) {
    // A step target: (token (1, 1), state...) -> (logits (1, vocab), next_state...), from zero states.
    std::vector<torch::Tensor> state;
    for (size_t k = 1; k < inputs.size(); ++k) state.push_back(zeros_like_spec(inputs[k]));
    torch::Tensor logits;
    auto feed = [&](int64_t id) {
      std::map<std::string, torch::Tensor> given{{inputs[0].name, token_tensor({id}, 0)}};
      for (size_t k = 1; k < inputs.size(); ++k) given[inputs[k].name] = state[k - 1];
      std::vector<torch::Tensor> out = model.run(model.check_inputs(given));
      logits = out[0];
      state.assign(out.begin() + 1, out.end());  // next_state, fed back as state
    };
    for (int64_t id : text) feed(id);
    for (int64_t n = 0; n < *length; ++n) {
      text.push_back(likeliest(logits, vocabulary.size()));
      if (n + 1 < *length) feed(text.back());
    }
  } else {
    // A window target: tokens (1, seq) -> logits (1, seq, vocab), seq at most max_sizes[seq].
    size_t window = text.size() + static_cast<size_t>(*length);
    const auto& seq = inputs[0].shape.size() > 1 ? inputs[0].shape[1] : inputs[0].shape[0];
    if (const auto* axis = std::get_if<std::string>(&seq); axis && meta.has("max_sizes") && meta["max_sizes"].has(*axis))
      window = static_cast<size_t>(meta["max_sizes"][*axis].number());
    for (int64_t n = 0; n < *length; ++n) {
      size_t from = text.size() > window ? text.size() - window : 0;
      torch::Tensor logits = model.run(model.check_inputs({{inputs[0].name, token_tensor(text, from)}}))[0];
      text.push_back(likeliest(logits[0][-1], vocabulary.size()));  // the next character after the last position
    }
  }
  std::string out;
  for (int64_t id : text) out += vocabulary[static_cast<size_t>(id)];
  std::cout << out << "\n";
  return std::cout ? 0 : 1;
} catch (const std::exception& e) {  // zoo::Error and libtorch's alike, in one line
  return std::cerr << "generate_text: " << zoo::first_line(e) << "\n", 1;
}
