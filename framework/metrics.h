// Prometheus metrics: counters, gauges and histograms grouped in labelled
// families, rendered in the text exposition format 0.0.4.
//
//   absl::StatusOr<CounterFamily*> requests = registry.AddCounter(
//       "http_requests_total", "HTTP requests handled.", {"route", "code"});
//   Counter& ok = (*requests)->WithLabels({"/accounts", "200"});  // cache it
//   ok.Increment();
//
// The registry owns every family and every child; the pointers and
// references it hands out stay valid for the registry's lifetime. Naming
// conventions (a `_total` suffix on counters, base units such as seconds) are
// the caller's business and are not enforced.
//
// Thread-safety: everything is safe to call concurrently. Increment, Set,
// Add and Observe on a child are lock-free atomics. WithLabels takes the
// family's mutex, so code on a hot path looks its child up once and keeps the
// reference. Render takes the registry's and each family's mutex in reader
// mode; it reads the atomics without stopping writers, so a render taken
// during updates is a consistent exposition (a histogram's +Inf bucket always
// equals its count) but not an atomic snapshot across children.
#ifndef FRAMEWORK_METRICS_H_
#define FRAMEWORK_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace cqrs {

// A value that only goes up. Families hand these out; one constructed on its
// own works but is never rendered.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `by`. A negative or NaN `by` is ignored: a counter never goes down.
  void Increment(double by = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down. As with Counter, only a family's children
// are rendered.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  // Adds `delta`, which may be negative.
  void Add(double delta);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into buckets with fixed upper bounds (inclusive: an
// observation equal to a bound lands in that bound's bucket), and keeps their
// sum. Created only by a HistogramFamily.
class Histogram {
 public:
  struct Snapshot {
    // Cumulative counts, one per upper bound, then the +Inf bucket (which
    // equals `count`).
    std::vector<uint64_t> cumulative_counts;
    double sum = 0;
    uint64_t count = 0;
  };

  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Records `value`. NaN lands in the +Inf bucket only (and makes the sum
  // NaN), as in the Prometheus client libraries.
  void Observe(double value);
  Snapshot TakeSnapshot() const;
  // The family's bounds, strictly increasing, without +Inf.
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  friend class HistogramFamily;
  // `upper_bounds` must outlive this object (the family owns both).
  explicit Histogram(const std::vector<double>& upper_bounds);

  const std::vector<double>& upper_bounds_;
  // Not cumulative: buckets_[i] counts observations in (bound[i-1], bound[i]];
  // the last one is the +Inf bucket. The count is their total.
  std::vector<std::atomic<uint64_t>> buckets_;
  std::atomic<double> sum_{0};
};

// What the three families share: a name, a help text and label names, all
// constant after construction. Families are created only by MetricsRegistry.
class MetricFamily {
 public:
  virtual ~MetricFamily();
  MetricFamily(const MetricFamily&) = delete;
  MetricFamily& operator=(const MetricFamily&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 protected:
  MetricFamily(std::string name, std::string help,
               std::vector<std::string> label_names);

  // True when `values` has one value per label name; otherwise logs (once
  // per family) and returns false, and the caller hands out its discard
  // child.
  bool CheckLabelCount(const std::vector<std::string>& values) const;

 private:
  friend class MetricsRegistry;

  // "counter", "gauge" or "histogram".
  virtual const char* type() const = 0;
  // Sample names this family renders, for collision checks.
  virtual std::vector<std::string> sample_names() const = 0;
  // Appends the sample lines, children sorted by label values.
  virtual void AppendSamples(std::string* out) const = 0;

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  mutable std::atomic<bool> warned_label_count_{false};
};

class CounterFamily : public MetricFamily {
 public:
  // The child for `values` (one per label name, in order), created at first
  // use. With the wrong number of values, returns a discard child that is
  // never rendered, shared by all such calls on this family.
  Counter& WithLabels(const std::vector<std::string>& values);

 private:
  friend class MetricsRegistry;
  CounterFamily(std::string name, std::string help,
                std::vector<std::string> label_names);

  const char* type() const override { return "counter"; }
  std::vector<std::string> sample_names() const override;
  void AppendSamples(std::string* out) const override;

  Counter discard_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Counter>> children_
      ABSL_GUARDED_BY(mu_);
};

class GaugeFamily : public MetricFamily {
 public:
  // As CounterFamily::WithLabels.
  Gauge& WithLabels(const std::vector<std::string>& values);

 private:
  friend class MetricsRegistry;
  GaugeFamily(std::string name, std::string help,
              std::vector<std::string> label_names);

  const char* type() const override { return "gauge"; }
  std::vector<std::string> sample_names() const override;
  void AppendSamples(std::string* out) const override;

  Gauge discard_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Gauge>> children_
      ABSL_GUARDED_BY(mu_);
};

class HistogramFamily : public MetricFamily {
 public:
  // As CounterFamily::WithLabels.
  Histogram& WithLabels(const std::vector<std::string>& values);
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  friend class MetricsRegistry;
  HistogramFamily(std::string name, std::string help,
                  std::vector<std::string> label_names,
                  std::vector<double> upper_bounds);

  const char* type() const override { return "histogram"; }
  std::vector<std::string> sample_names() const override;
  void AppendSamples(std::string* out) const override;

  // Constant after construction; declared before the histograms that refer
  // to it.
  const std::vector<double> upper_bounds_;
  Histogram discard_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Histogram>> children_
      ABSL_GUARDED_BY(mu_);
};

// Owns the metric families of one process (or one test) and renders them.
class MetricsRegistry {
 public:
  // The Content-Type of Render()'s output.
  static constexpr const char* kContentType =
      "text/plain; version=0.0.4; charset=utf-8";

  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Register a family and return it; the pointer stays valid for the
  // registry's lifetime. A family without labels has its single child (value
  // zero) from the start. Returns kInvalidArgument, registering nothing, when
  // `name` is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), a label name is
  // invalid ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__") or repeated, or
  // a sample name the family would render is already taken (a histogram
  // "x" takes x_bucket, x_sum and x_count too). These are programming
  // errors: fix the name; registering at startup makes them show at once.
  absl::StatusOr<CounterFamily*> AddCounter(
      std::string name, std::string help,
      std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(
      std::string name, std::string help,
      std::vector<std::string> label_names = {});
  // As above; also kInvalidArgument when a label is named "le" or
  // `upper_bounds` is empty, not strictly increasing or not finite (the +Inf
  // bucket is always there implicitly).
  absl::StatusOr<HistogramFamily*> AddHistogram(
      std::string name, std::string help, std::vector<std::string> label_names,
      std::vector<double> upper_bounds);

  // Latency buckets in seconds, 0.5 ms to 10 s.
  static std::vector<double> DefaultLatencyBuckets();

  // Every family in registration order, in the text exposition format 0.0.4:
  // "# HELP", "# TYPE", then the samples. Integral values print as integers
  // ("3", not "3.0" or "3e+00"), others in the shortest form that reads back
  // exactly; infinities and NaN print as "+Inf", "-Inf" and "NaN".
  std::string Render() const;

 private:
  // Takes ownership of `family` unless one of its sample names is taken;
  // returns kInvalidArgument then.
  absl::Status Register(std::unique_ptr<MetricFamily> family);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<MetricFamily>> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cqrs

#endif  // FRAMEWORK_METRICS_H_
