// A strict parser for the Prometheus text exposition format 0.0.4, so that
// tests check what a scraper would accept rather than comparing strings.
//
//   absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(body);
//   REQUIRE(parsed.ok());  CHECK(parsed->Value("x_total", {{"k", "v"}}) == 3);
//
// Beyond the grammar it checks what makes an exposition coherent: at most one
// HELP and one TYPE per family, TYPE before the family's samples, no sample
// repeated, and for each histogram series cumulative buckets with an `le`
// label, an le="+Inf" bucket equal to `_count`, and a `_sum`.
//
// Thread-safety: a pure function; ParsedMetrics is a plain value.
#ifndef TESTS_SUPPORT_PROMETHEUS_TEXT_H_
#define TESTS_SUPPORT_PROMETHEUS_TEXT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs::testing {

struct Sample {
  std::string name;
  // Unescaped label values.
  std::map<std::string, std::string> labels;
  double value = 0;
  std::optional<int64_t> timestamp_ms;
  // 1-based line number in the parsed text.
  int line = 0;
};

struct ParsedMetrics {
  // Family name -> "counter", "gauge", "histogram", "summary" or "untyped",
  // for the families that have a TYPE line.
  std::map<std::string, std::string> types;
  // Family name -> unescaped help text.
  std::map<std::string, std::string> help;
  // In text order.
  std::vector<Sample> samples;

  // The value of the sample named `name` with exactly `labels`, or nullopt.
  std::optional<double> Value(
      const std::string& name,
      const std::map<std::string, std::string>& labels = {}) const;
};

// Parses and validates `text`. Returns kInvalidArgument naming the line
// ("line 3: ...") and the reason on the first violation.
absl::StatusOr<ParsedMetrics> ParsePrometheusText(absl::string_view text);

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_PROMETHEUS_TEXT_H_
