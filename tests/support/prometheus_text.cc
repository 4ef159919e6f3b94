#include "tests/support/prometheus_text.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cqrs::testing {
namespace {

using Labels = std::map<std::string, std::string>;

absl::Status LineError(int line, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", reason));
}

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsLetter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsMetricNameChar(char c, bool first) {
  return IsLetter(c) || c == ':' || (!first && IsDigit(c));
}
bool IsLabelNameChar(char c, bool first) {
  return IsLetter(c) || (!first && IsDigit(c));
}

// Go's strconv.ParseFloat, which Prometheus uses, also takes "+Inf", "Inf",
// "-Inf" and "NaN" in any case.
std::optional<double> ParseFloat(absl::string_view token) {
  const std::string lower = absl::AsciiStrToLower(token);
  if (lower == "+inf" || lower == "inf") {
    return std::numeric_limits<double>::infinity();
  }
  if (lower == "-inf") return -std::numeric_limits<double>::infinity();
  if (lower == "nan") return std::numeric_limits<double>::quiet_NaN();
  absl::string_view digits = token;
  // from_chars takes no '+'.
  if (absl::ConsumePrefix(&digits, "+") &&
      (digits.empty() || digits.front() == '-')) {
    return std::nullopt;
  }
  if (digits.empty()) return std::nullopt;
  double value = 0;
  const std::from_chars_result result =
      std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (result.ec != std::errc() || result.ptr != digits.data() + digits.size()) {
    return std::nullopt;
  }
  return value;
}

std::optional<int64_t> ParseInt64(absl::string_view token) {
  int64_t value = 0;
  const std::from_chars_result result =
      std::from_chars(token.data(), token.data() + token.size(), value);
  if (token.empty() || result.ec != std::errc() ||
      result.ptr != token.data() + token.size()) {
    return std::nullopt;
  }
  return value;
}

// Reads one line left to right.
class Cursor {
 public:
  explicit Cursor(absl::string_view text) : text_(text) {}

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }
  void Advance() { ++pos_; }
  bool Consume(char c) {
    if (Peek() != c || AtEnd()) return false;
    ++pos_;
    return true;
  }
  // Returns whether there was at least one blank.
  bool SkipBlanks() {
    const size_t start = pos_;
    while (!AtEnd() && IsBlank(text_[pos_])) ++pos_;
    return pos_ > start;
  }
  absl::string_view ReadMetricName() {
    const size_t start = pos_;
    while (!AtEnd() && IsMetricNameChar(text_[pos_], pos_ == start)) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  absl::string_view ReadLabelName() {
    const size_t start = pos_;
    while (!AtEnd() && IsLabelNameChar(text_[pos_], pos_ == start)) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  absl::string_view ReadToken() {
    const size_t start = pos_;
    while (!AtEnd() && !IsBlank(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  absl::string_view Rest() {
    absl::string_view rest = text_.substr(std::min(pos_, text_.size()));
    pos_ = text_.size();
    return rest;
  }

 private:
  absl::string_view text_;
  size_t pos_ = 0;
};

// Undoes the escapes `escapable` allows (each stands for itself, except 'n'
// for a line feed); any other escape is an error.
absl::Status Unescape(absl::string_view text, absl::string_view escapable,
                      int line, std::string* out) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out->push_back(text[i]);
      continue;
    }
    if (i + 1 == text.size()) {
      return LineError(line, "a backslash ends the text");
    }
    const char escaped = text[++i];
    if (escapable.find(escaped) == absl::string_view::npos) {
      return LineError(line, absl::StrCat("invalid escape sequence \\",
                                          absl::CEscape({&escaped, 1})));
    }
    out->push_back(escaped == 'n' ? '\n' : escaped);
  }
  return absl::OkStatus();
}

// Reads a quoted label value whose opening quote the cursor is past.
absl::Status ReadLabelValue(Cursor& cursor, int line, std::string* value) {
  std::string raw;
  while (true) {
    if (cursor.AtEnd()) return LineError(line, "unterminated label value");
    const char c = cursor.Peek();
    cursor.Advance();
    if (c == '"') break;
    raw.push_back(c);
    if (c == '\\') {
      if (cursor.AtEnd()) return LineError(line, "unterminated label value");
      raw.push_back(cursor.Peek());
      cursor.Advance();
    }
  }
  return Unescape(raw, "\\\"n", line, value);
}

// Which part of a family a sample is.
enum class SampleRole { kBucket, kSum, kCount };

struct HistogramSample {
  size_t index;  // into ParsedMetrics::samples
  std::string family;
  SampleRole role;
};

struct Parser {
  ParsedMetrics parsed;
  // Names of the samples seen so far, to catch a TYPE line after them.
  std::set<std::string> sample_names;
  std::set<std::pair<std::string, Labels>> series;
  std::vector<HistogramSample> histogram_samples;

  absl::Status ParseComment(Cursor& cursor, int line);
  absl::Status ParseSample(Cursor& cursor, int line);
  absl::Status CheckHistograms() const;
};

absl::Status Parser::ParseComment(Cursor& cursor, int line) {
  cursor.SkipBlanks();
  const absl::string_view keyword = cursor.ReadToken();
  if (keyword != "HELP" && keyword != "TYPE") return absl::OkStatus();
  if (!cursor.SkipBlanks()) {
    return LineError(line, absl::StrCat(keyword, " without a metric name"));
  }
  const std::string name(cursor.ReadMetricName());
  if (name.empty() || (!cursor.AtEnd() && !IsBlank(cursor.Peek()))) {
    return LineError(line, absl::StrCat("invalid metric name in ", keyword));
  }
  cursor.SkipBlanks();

  if (keyword == "HELP") {
    if (parsed.help.count(name) > 0) {
      return LineError(line, absl::StrCat("second HELP line for ", name));
    }
    std::string help;
    if (absl::Status status = Unescape(cursor.Rest(), "\\n", line, &help);
        !status.ok()) {
      return status;
    }
    parsed.help[name] = std::move(help);
    return absl::OkStatus();
  }

  const std::string type(cursor.ReadToken());
  cursor.SkipBlanks();
  if (!cursor.AtEnd()) {
    return LineError(line, "unexpected text after the TYPE");
  }
  static const std::set<std::string>* const kTypes = new std::set<std::string>{
      "counter", "gauge", "histogram", "summary", "untyped"};
  if (kTypes->count(type) == 0) {
    return LineError(line, absl::StrCat("unknown metric type \"",
                                        absl::CEscape(type), "\""));
  }
  if (parsed.types.count(name) > 0) {
    return LineError(line, absl::StrCat("second TYPE line for ", name));
  }
  std::vector<std::string> family_samples = {name};
  if (type == "histogram") family_samples.push_back(name + "_bucket");
  if (type == "histogram" || type == "summary") {
    family_samples.push_back(name + "_sum");
    family_samples.push_back(name + "_count");
  }
  for (const std::string& sample : family_samples) {
    if (sample_names.count(sample) > 0) {
      return LineError(line, absl::StrCat("TYPE line for ", name,
                                          " after its sample ", sample));
    }
  }
  parsed.types[name] = type;
  return absl::OkStatus();
}

absl::Status Parser::ParseSample(Cursor& cursor, int line) {
  Sample sample;
  sample.line = line;
  sample.name = std::string(cursor.ReadMetricName());
  if (sample.name.empty()) return LineError(line, "invalid metric name");

  // As in Go's parser, blanks may separate the name from its labels.
  const bool blank_after_name = cursor.SkipBlanks();
  if (cursor.Consume('{')) {
    while (true) {
      cursor.SkipBlanks();
      if (cursor.Consume('}')) break;
      const std::string label(cursor.ReadLabelName());
      if (label.empty()) return LineError(line, "invalid label name");
      if (label == "__name__") {
        return LineError(line, "label name __name__ is reserved");
      }
      cursor.SkipBlanks();
      if (!cursor.Consume('=')) {
        return LineError(line,
                         absl::StrCat("expected '=' after label ", label));
      }
      cursor.SkipBlanks();
      if (!cursor.Consume('"')) {
        return LineError(line, absl::StrCat("expected '\"' to open the value "
                                            "of label ",
                                            label));
      }
      std::string value;
      if (absl::Status status = ReadLabelValue(cursor, line, &value);
          !status.ok()) {
        return status;
      }
      if (!sample.labels.emplace(label, std::move(value)).second) {
        return LineError(line, absl::StrCat("label ", label, " repeated"));
      }
      cursor.SkipBlanks();
      if (cursor.Consume('}')) break;
      if (!cursor.Consume(',')) {
        return LineError(line, "expected ',' or '}' after a label value");
      }
    }
    cursor.SkipBlanks();
  } else if (!blank_after_name) {
    return LineError(line,
                     cursor.AtEnd() ? "missing value" : "invalid metric name");
  }

  const absl::string_view value_token = cursor.ReadToken();
  const std::optional<double> value = ParseFloat(value_token);
  if (!value.has_value()) {
    return LineError(line, absl::StrCat("invalid value \"",
                                        absl::CEscape(value_token), "\""));
  }
  sample.value = *value;
  cursor.SkipBlanks();
  if (!cursor.AtEnd()) {
    const absl::string_view timestamp_token = cursor.ReadToken();
    sample.timestamp_ms = ParseInt64(timestamp_token);
    if (!sample.timestamp_ms.has_value()) {
      return LineError(line,
                       absl::StrCat("invalid timestamp \"",
                                    absl::CEscape(timestamp_token), "\""));
    }
    cursor.SkipBlanks();
    if (!cursor.AtEnd()) {
      return LineError(line, "unexpected text after the timestamp");
    }
  }

  if (!series.emplace(sample.name, sample.labels).second) {
    return LineError(line, absl::StrCat("duplicate sample ", sample.name));
  }

  // Which histogram family, if any, the sample belongs to.
  auto typed = [this](absl::string_view family) -> std::string {
    auto it = parsed.types.find(std::string(family));
    return it == parsed.types.end() ? "" : it->second;
  };
  if (typed(sample.name) == "histogram") {
    return LineError(line, absl::StrCat("histogram ", sample.name,
                                        " has a sample without a _bucket, "
                                        "_sum or _count suffix"));
  }
  const std::pair<absl::string_view, SampleRole> suffixes[] = {
      {"_bucket", SampleRole::kBucket},
      {"_sum", SampleRole::kSum},
      {"_count", SampleRole::kCount}};
  for (const auto& [suffix, role] : suffixes) {
    absl::string_view family = sample.name;
    if (!absl::ConsumeSuffix(&family, suffix) || typed(family) != "histogram") {
      continue;
    }
    if (role == SampleRole::kBucket) {
      auto le = sample.labels.find("le");
      if (le == sample.labels.end()) {
        return LineError(line, absl::StrCat(sample.name, " without le"));
      }
      if (!ParseFloat(le->second).has_value()) {
        return LineError(line, absl::StrCat("invalid le \"",
                                            absl::CEscape(le->second), "\""));
      }
    }
    if (role != SampleRole::kSum && !(sample.value >= 0)) {
      return LineError(
          line, absl::StrCat(sample.name, " is not a non-negative count"));
    }
    histogram_samples.push_back(
        {parsed.samples.size(), std::string(family), role});
    break;
  }

  sample_names.insert(sample.name);
  parsed.samples.push_back(std::move(sample));
  return absl::OkStatus();
}

absl::Status Parser::CheckHistograms() const {
  struct Series {
    // (le, sample)
    std::vector<std::pair<double, const Sample*>> buckets;
    const Sample* sum = nullptr;
    const Sample* count = nullptr;
    int first_line = 0;
  };
  // Keyed by family and the labels other than le.
  std::map<std::pair<std::string, Labels>, Series> all;
  for (const HistogramSample& entry : histogram_samples) {
    const Sample& sample = parsed.samples[entry.index];
    Labels labels = sample.labels;
    if (entry.role == SampleRole::kBucket) labels.erase("le");
    Series& series = all[{entry.family, std::move(labels)}];
    if (series.first_line == 0) series.first_line = sample.line;
    switch (entry.role) {
      case SampleRole::kBucket:
        series.buckets.push_back(
            {*ParseFloat(sample.labels.at("le")), &sample});
        break;
      case SampleRole::kSum:
        series.sum = &sample;
        break;
      case SampleRole::kCount:
        series.count = &sample;
        break;
    }
  }

  for (auto& [key, series] : all) {
    const std::string& family = key.first;
    std::sort(series.buckets.begin(), series.buckets.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t i = 1; i < series.buckets.size(); ++i) {
      const Sample& previous = *series.buckets[i - 1].second;
      const Sample& current = *series.buckets[i].second;
      if (series.buckets[i - 1].first == series.buckets[i].first) {
        return LineError(current.line,
                         absl::StrCat(family, " repeats the bucket le=\"",
                                      current.labels.at("le"), "\""));
      }
      if (current.value < previous.value) {
        return LineError(
            current.line,
            absl::StrCat(family, " buckets are not cumulative: le=\"",
                         current.labels.at("le"), "\" holds ", current.value,
                         " < ", previous.value));
      }
    }
    if (series.buckets.empty() || !std::isinf(series.buckets.back().first) ||
        series.buckets.back().first < 0) {
      return LineError(series.first_line,
                       absl::StrCat(family, " has no le=\"+Inf\" bucket"));
    }
    if (series.count == nullptr) {
      return LineError(series.first_line,
                       absl::StrCat(family, " has no _count"));
    }
    if (series.sum == nullptr) {
      return LineError(series.first_line, absl::StrCat(family, " has no _sum"));
    }
    const Sample& inf = *series.buckets.back().second;
    if (inf.value != series.count->value) {
      return LineError(series.count->line,
                       absl::StrCat(family, "_count is ", series.count->value,
                                    " but the +Inf bucket holds ", inf.value));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<double> ParsedMetrics::Value(
    const std::string& name,
    const std::map<std::string, std::string>& labels) const {
  for (const Sample& sample : samples) {
    if (sample.name == name && sample.labels == labels) return sample.value;
  }
  return std::nullopt;
}

absl::StatusOr<ParsedMetrics> ParsePrometheusText(absl::string_view text) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  // The text ends with a line feed, so the split ends with an empty piece.
  if (!lines.back().empty()) {
    return LineError(static_cast<int>(lines.size()),
                     "the last line does not end with a line feed");
  }
  lines.pop_back();

  Parser parser;
  for (size_t i = 0; i < lines.size(); ++i) {
    const int line = static_cast<int>(i) + 1;
    Cursor cursor(lines[i]);
    cursor.SkipBlanks();
    if (cursor.AtEnd()) continue;
    const absl::Status status = cursor.Consume('#')
                                    ? parser.ParseComment(cursor, line)
                                    : parser.ParseSample(cursor, line);
    if (!status.ok()) return status;
  }
  if (absl::Status status = parser.CheckHistograms(); !status.ok()) {
    return status;
  }
  return std::move(parser.parsed);
}

}  // namespace cqrs::testing
