#include "framework/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "framework/log.h"
#include "framework/status_macros.h"

namespace cqrs {
namespace {

// Doubles represent every integer below 2^53 exactly; 1e15 keeps the integer
// form to at most 16 digits, as short as the shortest round-trip form.
constexpr double kLargestIntegerToPrint = 1e15;

void AtomicAdd(std::atomic<double>& target, double delta) {
  double current = target.load(std::memory_order_relaxed);
  // compare_exchange_weak reloads `current` on failure.
  while (!target.compare_exchange_weak(current, current + delta,
                                       std::memory_order_relaxed)) {
  }
}

// Prometheus spells values as Go's strconv.ParseFloat reads them.
std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::trunc(value) && std::fabs(value) < kLargestIntegerToPrint) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  // %g with the fewest digits that read back as the same double: "0.0005"
  // and "2.5" as Prometheus' own clients print them, "1e-09" when small.
  char buffer[64];
  const std::to_chars_result result = std::to_chars(
      buffer, buffer + sizeof(buffer), value, std::chars_format::general);
  return std::string(buffer, result.ptr);
}

void AppendEscapedHelp(absl::string_view help, std::string* out) {
  for (char c : help) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

void AppendEscapedLabelValue(absl::string_view value, std::string* out) {
  for (char c : value) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '"':
        out->append("\\\"");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

// One sample line: `name{l1="v1",...,le="..."} value`. `le` is the
// already-formatted bucket bound, or empty for samples without one.
void AppendSample(absl::string_view name,
                  const std::vector<std::string>& label_names,
                  const std::vector<std::string>& label_values,
                  absl::string_view le, double value, std::string* out) {
  out->append(name.data(), name.size());
  if (!label_names.empty() || !le.empty()) {
    out->push_back('{');
    for (size_t i = 0; i < label_names.size(); ++i) {
      if (i > 0) out->push_back(',');
      absl::StrAppend(out, label_names[i], "=\"");
      AppendEscapedLabelValue(label_values[i], out);
      out->push_back('"');
    }
    if (!le.empty()) {
      absl::StrAppend(out, label_names.empty() ? "" : ",", "le=\"", le, "\"");
    }
    out->push_back('}');
  }
  absl::StrAppend(out, " ", FormatValue(value), "\n");
}

bool IsMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

bool IsLabelName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

absl::Status ValidateNames(absl::string_view name,
                           const std::vector<std::string>& label_names) {
  if (!IsMetricName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("metric name \"", absl::CEscape(name),
                     "\" does not match [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& label = label_names[i];
    if (!IsLabelName(label) || absl::StartsWith(label, "__")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label name \"", absl::CEscape(label), "\" of metric ", name,
          " does not match [a-zA-Z_][a-zA-Z0-9_]* or starts with \"__\""));
    }
    if (std::find(label_names.begin(), label_names.begin() + i, label) !=
        label_names.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("label name ", label, " repeated in metric ", name));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateHistogram(absl::string_view name,
                               const std::vector<std::string>& label_names,
                               const std::vector<double>& upper_bounds) {
  if (std::find(label_names.begin(), label_names.end(), "le") !=
      label_names.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "histogram ", name, " may not have a label named le (reserved)"));
  }
  if (upper_bounds.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("histogram ", name, " has no bucket upper bounds"));
  }
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    if (!std::isfinite(upper_bounds[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram ", name,
          " has a bound that is not finite (the +Inf bucket is implicit)"));
    }
    if (i > 0 && !(upper_bounds[i - 1] < upper_bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", name,
                       " bucket upper bounds are not strictly "
                       "increasing at ",
                       FormatValue(upper_bounds[i])));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void Counter::Increment(double by) {
  // Also false for NaN.
  if (!(by >= 0)) return;
  AtomicAdd(value_, by);
}

void Gauge::Add(double delta) { AtomicAdd(value_, delta); }

Histogram::Histogram(const std::vector<double>& upper_bounds)
    : upper_bounds_(upper_bounds), buckets_(upper_bounds.size() + 1) {}

void Histogram::Observe(double value) {
  size_t index = upper_bounds_.size();
  if (!std::isnan(value)) {
    index =
        std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) -
        upper_bounds_.begin();
  }
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, value);
}

Histogram::Snapshot Histogram::TakeSnapshot() const {
  Snapshot result;
  result.cumulative_counts.reserve(buckets_.size());
  // The count is derived from the buckets read here rather than kept apart,
  // so the +Inf bucket and the count agree even while writers run.
  for (const std::atomic<uint64_t>& bucket : buckets_) {
    result.count += bucket.load(std::memory_order_relaxed);
    result.cumulative_counts.push_back(result.count);
  }
  result.sum = sum_.load(std::memory_order_relaxed);
  return result;
}

MetricFamily::MetricFamily(std::string name, std::string help,
                           std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)) {}

MetricFamily::~MetricFamily() = default;

bool MetricFamily::CheckLabelCount(
    const std::vector<std::string>& values) const {
  if (values.size() == label_names_.size()) return true;
  if (!warned_label_count_.exchange(true, std::memory_order_relaxed)) {
    Log(LogLevel::kError,
        "metric used with the wrong number of label values; discarding",
        {{"metric", name_},
         {"expected", label_names_.size()},
         {"got", values.size()}});
  }
  return false;
}

namespace {

// The child for `values`, created with `make` on first use. The reader lock
// covers the common case, a child that exists.
template <typename Child, typename Make>
Child& FindOrCreate(
    absl::Mutex& mu,
    std::map<std::vector<std::string>, std::unique_ptr<Child>>& children,
    const std::vector<std::string>& values,
    Make make) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  {
    absl::ReaderMutexLock lock(&mu);
    auto it = children.find(values);
    if (it != children.end()) return *it->second;
  }
  absl::MutexLock lock(&mu);
  std::unique_ptr<Child>& child = children[values];
  if (child == nullptr) child = make();
  return *child;
}

}  // namespace

CounterFamily::CounterFamily(std::string name, std::string help,
                             std::vector<std::string> label_names)
    : MetricFamily(std::move(name), std::move(help), std::move(label_names)) {
  if (this->label_names().empty()) children_[{}] = std::make_unique<Counter>();
}

Counter& CounterFamily::WithLabels(const std::vector<std::string>& values) {
  if (!CheckLabelCount(values)) return discard_;
  return FindOrCreate(mu_, children_, values,
                      [] { return std::make_unique<Counter>(); });
}

std::vector<std::string> CounterFamily::sample_names() const {
  return {name()};
}

void CounterFamily::AppendSamples(std::string* out) const {
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [values, child] : children_) {
    AppendSample(name(), label_names(), values, "", child->value(), out);
  }
}

GaugeFamily::GaugeFamily(std::string name, std::string help,
                         std::vector<std::string> label_names)
    : MetricFamily(std::move(name), std::move(help), std::move(label_names)) {
  if (this->label_names().empty()) children_[{}] = std::make_unique<Gauge>();
}

Gauge& GaugeFamily::WithLabels(const std::vector<std::string>& values) {
  if (!CheckLabelCount(values)) return discard_;
  return FindOrCreate(mu_, children_, values,
                      [] { return std::make_unique<Gauge>(); });
}

std::vector<std::string> GaugeFamily::sample_names() const { return {name()}; }

void GaugeFamily::AppendSamples(std::string* out) const {
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [values, child] : children_) {
    AppendSample(name(), label_names(), values, "", child->value(), out);
  }
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names,
                                 std::vector<double> upper_bounds)
    : MetricFamily(std::move(name), std::move(help), std::move(label_names)),
      upper_bounds_(std::move(upper_bounds)),
      discard_(upper_bounds_) {
  if (this->label_names().empty()) {
    children_[{}] = std::unique_ptr<Histogram>(new Histogram(upper_bounds_));
  }
}

Histogram& HistogramFamily::WithLabels(const std::vector<std::string>& values) {
  if (!CheckLabelCount(values)) return discard_;
  return FindOrCreate(mu_, children_, values, [this] {
    return std::unique_ptr<Histogram>(new Histogram(upper_bounds_));
  });
}

std::vector<std::string> HistogramFamily::sample_names() const {
  return {name(), absl::StrCat(name(), "_bucket"), absl::StrCat(name(), "_sum"),
          absl::StrCat(name(), "_count")};
}

void HistogramFamily::AppendSamples(std::string* out) const {
  std::vector<std::string> le;
  le.reserve(upper_bounds_.size() + 1);
  for (double bound : upper_bounds_) le.push_back(FormatValue(bound));
  le.push_back("+Inf");
  const std::string bucket_name = absl::StrCat(name(), "_bucket");
  const std::string sum_name = absl::StrCat(name(), "_sum");
  const std::string count_name = absl::StrCat(name(), "_count");

  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [values, child] : children_) {
    const Histogram::Snapshot snapshot = child->TakeSnapshot();
    for (size_t i = 0; i < le.size(); ++i) {
      AppendSample(bucket_name, label_names(), values, le[i],
                   static_cast<double>(snapshot.cumulative_counts[i]), out);
    }
    AppendSample(sum_name, label_names(), values, "", snapshot.sum, out);
    AppendSample(count_name, label_names(), values, "",
                 static_cast<double>(snapshot.count), out);
  }
}

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

absl::StatusOr<CounterFamily*> MetricsRegistry::AddCounter(
    std::string name, std::string help, std::vector<std::string> label_names) {
  RETURN_IF_ERROR(ValidateNames(name, label_names));
  std::unique_ptr<CounterFamily> family(new CounterFamily(
      std::move(name), std::move(help), std::move(label_names)));
  CounterFamily* result = family.get();
  RETURN_IF_ERROR(Register(std::move(family)));
  return result;
}

absl::StatusOr<GaugeFamily*> MetricsRegistry::AddGauge(
    std::string name, std::string help, std::vector<std::string> label_names) {
  RETURN_IF_ERROR(ValidateNames(name, label_names));
  std::unique_ptr<GaugeFamily> family(new GaugeFamily(
      std::move(name), std::move(help), std::move(label_names)));
  GaugeFamily* result = family.get();
  RETURN_IF_ERROR(Register(std::move(family)));
  return result;
}

absl::StatusOr<HistogramFamily*> MetricsRegistry::AddHistogram(
    std::string name, std::string help, std::vector<std::string> label_names,
    std::vector<double> upper_bounds) {
  RETURN_IF_ERROR(ValidateNames(name, label_names));
  RETURN_IF_ERROR(ValidateHistogram(name, label_names, upper_bounds));
  std::unique_ptr<HistogramFamily> family(
      new HistogramFamily(std::move(name), std::move(help),
                          std::move(label_names), std::move(upper_bounds)));
  HistogramFamily* result = family.get();
  RETURN_IF_ERROR(Register(std::move(family)));
  return result;
}

absl::Status MetricsRegistry::Register(std::unique_ptr<MetricFamily> family) {
  const std::vector<std::string> wanted = family->sample_names();
  absl::MutexLock lock(&mu_);
  for (const std::unique_ptr<MetricFamily>& existing : families_) {
    for (const std::string& taken : existing->sample_names()) {
      if (std::find(wanted.begin(), wanted.end(), taken) == wanted.end()) {
        continue;
      }
      if (existing->name() == family->name()) {
        return absl::InvalidArgumentError(
            absl::StrCat("metric ", family->name(), " is already registered"));
      }
      {
        return absl::InvalidArgumentError(absl::StrCat(
            "metric ", family->name(), " collides with the already registered ",
            existing->type(), " ", existing->name(), " (both use ", taken,
            ")"));
      }
    }
  }
  families_.push_back(std::move(family));
  return absl::OkStatus();
}

std::vector<double> MetricsRegistry::DefaultLatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
}

std::string MetricsRegistry::Render() const {
  std::string out;
  absl::ReaderMutexLock lock(&mu_);
  for (const std::unique_ptr<MetricFamily>& family : families_) {
    // "# HELP name " keeps its space even with an empty help, as the Go
    // client writes it and Prometheus' own lexer expects.
    absl::StrAppend(&out, "# HELP ", family->name(), " ");
    AppendEscapedHelp(family->help(), &out);
    absl::StrAppend(&out, "\n# TYPE ", family->name(), " ", family->type(),
                    "\n");
    family->AppendSamples(&out);
  }
  return out;
}

}  // namespace cqrs
