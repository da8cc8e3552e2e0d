// A small JSON reader, enough for the `zoo.json` metadata that every zoo artifact carries, and the
// two helpers zoo-run writes its one-line summaries with. Header-only so the runner and the
// examples need nothing beyond libtorch.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace zoo::json {

struct Value;
using Array = std::vector<Value>;
using Object = std::map<std::string, Value>;

struct Value {
  // Arrays and objects sit behind shared_ptr so that Value stays a complete type.
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<Array>, std::shared_ptr<Object>> data = nullptr;

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(data); }
  bool is_number() const { return std::holds_alternative<double>(data); }
  bool is_string() const { return std::holds_alternative<std::string>(data); }
  bool is_array() const { return std::holds_alternative<std::shared_ptr<Array>>(data); }
  bool is_object() const { return std::holds_alternative<std::shared_ptr<Object>>(data); }

  double number() const { return get<double>("a number"); }
  const std::string& string() const { return get<std::string>("a string"); }
  const Array& array() const { return *get<std::shared_ptr<Array>>("an array"); }
  const Object& object() const { return *get<std::shared_ptr<Object>>("an object"); }

  bool has(const std::string& key) const { return is_object() && object().count(key) > 0; }
  const Value& operator[](const std::string& key) const {
    const Object& o = object();
    auto it = o.find(key);
    if (it == o.end()) throw std::runtime_error("metadata has no key '" + key + "'");
    return it->second;
  }
  // `key`'s string value, or `fallback` when the key is absent or not a string.
  std::string string_or(const std::string& key, const std::string& fallback) const {
    return has(key) && (*this)[key].is_string() ? (*this)[key].string() : fallback;
  }

 private:
  template <typename T>
  const T& get(const char* what) const {
    if (const T* p = std::get_if<T>(&data)) return *p;
    throw std::runtime_error(std::string("metadata value is not ") + what);
  }
};

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Value parse_document() {
    Value v = parse_value();
    skip_space();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;

  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("invalid JSON metadata at character " + std::to_string(i_) + ": " + why);
  }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool consume(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(i_, n, word) != 0) return false;
    i_ += n;
    return true;
  }

  Value parse_value() {
    skip_space();
    if (i_ >= s_.size()) fail("unexpected end");
    char c = s_[i_];
    Value v;
    if (c == '{') {
      v.data = parse_object();
    } else if (c == '[') {
      v.data = parse_array();
    } else if (c == '"') {
      v.data = parse_string();
    } else if (consume("true")) {
      v.data = true;
    } else if (consume("false")) {
      v.data = false;
    } else if (consume("null")) {
      v.data = nullptr;
    } else {
      v.data = parse_number();
    }
    return v;
  }

  std::shared_ptr<Object> parse_object() {
    auto out = std::make_shared<Object>();
    ++i_;  // '{'
    skip_space();
    if (i_ < s_.size() && s_[i_] == '}') return ++i_, out;
    while (true) {
      skip_space();
      if (i_ >= s_.size() || s_[i_] != '"') fail("expected a key");
      std::string key = parse_string();
      skip_space();
      if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
      ++i_;
      (*out)[key] = parse_value();
      skip_space();
      if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
      if (i_ < s_.size() && s_[i_] == '}') return ++i_, out;
      fail("expected ',' or '}'");
    }
  }

  std::shared_ptr<Array> parse_array() {
    auto out = std::make_shared<Array>();
    ++i_;  // '['
    skip_space();
    if (i_ < s_.size() && s_[i_] == ']') return ++i_, out;
    while (true) {
      out->push_back(parse_value());
      skip_space();
      if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
      if (i_ < s_.size() && s_[i_] == ']') return ++i_, out;
      fail("expected ',' or ']'");
    }
  }

  double parse_number() {
    const char* begin = s_.c_str() + i_;
    char* end = nullptr;
    double d = std::strtod(begin, &end);
    if (end == begin) fail("unexpected character");
    i_ += static_cast<size_t>(end - begin);
    return d;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  unsigned parse_hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    unsigned cp = std::stoul(s_.substr(i_, 4), nullptr, 16);
    i_ += 4;
    return cp;
  }

  std::string parse_string() {
    std::string out;
    ++i_;  // opening quote
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') { out += c; continue; }
      if (i_ >= s_.size()) break;
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = parse_hex4();
          // A surrogate pair encodes one code point above U+FFFF (Python's json.dumps writes them).
          if (cp >= 0xD800 && cp < 0xDC00 && consume("\\u")) {
            unsigned low = parse_hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
    fail("unterminated string");
  }
};

inline Value parse(const std::string& text) { return Parser(text).parse_document(); }

// `text` as a JSON string literal, quotes included.
inline std::string quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// `value` as a JSON number (9 significant digits); NaN and infinities, which JSON lacks, as null.
inline std::string number(double value) {
  if (!std::isfinite(value)) return "null";
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

}  // namespace zoo::json
