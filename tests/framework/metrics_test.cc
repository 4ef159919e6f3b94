#include "framework/metrics.h"

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "framework/http/request_metrics.h"
#include "framework/log.h"
#include "tests/support/prometheus_text.h"

namespace cqrs {
namespace {

using ::cqrs::testing::ParsedMetrics;
using ::cqrs::testing::ParsePrometheusText;

// Renders `registry` and parses it back, failing the test on invalid output.
ParsedMetrics RenderAndParse(const MetricsRegistry& registry) {
  const std::string text = registry.Render();
  INFO(text);
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(text);
  if (!parsed.ok()) {
    FAIL(parsed.status().ToString());
  }
  return *std::move(parsed);
}

CounterFamily& MustAddCounter(MetricsRegistry& registry, std::string name,
                              std::vector<std::string> labels = {}) {
  absl::StatusOr<CounterFamily*> family =
      registry.AddCounter(std::move(name), "help", std::move(labels));
  REQUIRE(family.ok());
  return **family;
}

TEST_CASE("Metrics render in the text exposition format", "[framework]") {
  MetricsRegistry registry;
  CounterFamily& requests =
      MustAddCounter(registry, "http_requests_total", {"route", "code"});
  absl::StatusOr<GaugeFamily*> in_flight =
      registry.AddGauge("in_flight", "Requests being served.");
  REQUIRE(in_flight.ok());
  absl::StatusOr<HistogramFamily*> latency = registry.AddHistogram(
      "latency_seconds", "Latency.", {"route"}, {0.005, 0.5, 1});
  REQUIRE(latency.ok());

  requests.WithLabels({"/b", "200"}).Increment();
  requests.WithLabels({"/a", "500"}).Increment(2);
  requests.WithLabels({"/a", "200"}).Increment(0.25);
  (*in_flight)->WithLabels({}).Set(-3);
  Histogram& a = (*latency)->WithLabels({"/a"});
  a.Observe(0.00390625);  // 2^-8, so that the sum is exact
  a.Observe(0.5);
  a.Observe(7);

  // Children sorted by label values, families in registration order.
  CHECK(registry.Render() ==
        "# HELP http_requests_total help\n"
        "# TYPE http_requests_total counter\n"
        "http_requests_total{route=\"/a\",code=\"200\"} 0.25\n"
        "http_requests_total{route=\"/a\",code=\"500\"} 2\n"
        "http_requests_total{route=\"/b\",code=\"200\"} 1\n"
        "# HELP in_flight Requests being served.\n"
        "# TYPE in_flight gauge\n"
        "in_flight -3\n"
        "# HELP latency_seconds Latency.\n"
        "# TYPE latency_seconds histogram\n"
        "latency_seconds_bucket{route=\"/a\",le=\"0.005\"} 1\n"
        "latency_seconds_bucket{route=\"/a\",le=\"0.5\"} 2\n"
        "latency_seconds_bucket{route=\"/a\",le=\"1\"} 2\n"
        "latency_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"
        "latency_seconds_sum{route=\"/a\"} 7.50390625\n"
        "latency_seconds_count{route=\"/a\"} 3\n");
  CHECK(std::string(MetricsRegistry::kContentType) ==
        "text/plain; version=0.0.4; charset=utf-8");
}

TEST_CASE("Families without labels show a zero sample from registration",
          "[framework]") {
  MetricsRegistry registry;
  MustAddCounter(registry, "started_total");
  MustAddCounter(registry, "by_kind_total", {"kind"});
  REQUIRE(registry.AddGauge("temperature", "").ok());
  REQUIRE(registry.AddHistogram("wait_seconds", "w", {}, {1}).ok());

  CHECK(registry.Render() ==
        "# HELP started_total help\n"
        "# TYPE started_total counter\n"
        "started_total 0\n"
        "# HELP by_kind_total help\n"
        "# TYPE by_kind_total counter\n"
        "# HELP temperature \n"
        "# TYPE temperature gauge\n"
        "temperature 0\n"
        "# HELP wait_seconds w\n"
        "# TYPE wait_seconds histogram\n"
        "wait_seconds_bucket{le=\"1\"} 0\n"
        "wait_seconds_bucket{le=\"+Inf\"} 0\n"
        "wait_seconds_sum 0\n"
        "wait_seconds_count 0\n");
  const ParsedMetrics parsed = RenderAndParse(registry);
  CHECK(parsed.types.at("by_kind_total") == "counter");
  CHECK(parsed.help.at("temperature").empty());
}

TEST_CASE("Label values and help round-trip through escaping", "[framework]") {
  MetricsRegistry registry;
  const std::string help = "Line one\nline two with a \\ and \"quotes\"";
  absl::StatusOr<CounterFamily*> family =
      registry.AddCounter("escapes_total", help, {"path", "note"});
  REQUIRE(family.ok());
  const std::vector<std::string> values = {"C:\\dir\\", "say \"hi\"\nbye"};
  (*family)->WithLabels(values).Increment(5);
  (*family)->WithLabels({"", "{},=\t"}).Increment();

  const std::string text = registry.Render();
  CHECK(absl::StrContains(
      text,
      "# HELP escapes_total Line one\\nline two with a \\\\ and "
      "\"quotes\"\n"));
  CHECK(absl::StrContains(
      text,
      "escapes_total{path=\"C:\\\\dir\\\\\",note=\"say \\\"hi\\\"\\nbye\"} "
      "5\n"));

  const ParsedMetrics parsed = RenderAndParse(registry);
  CHECK(parsed.help.at("escapes_total") == help);
  CHECK(parsed.Value("escapes_total",
                     {{"path", values[0]}, {"note", values[1]}}) == 5);
  CHECK(parsed.Value("escapes_total", {{"path", ""}, {"note", "{},=\t"}}) == 1);
}

TEST_CASE("Values print as integers, shortest decimals or Prometheus' words",
          "[framework]") {
  MetricsRegistry registry;
  absl::StatusOr<GaugeFamily*> family = registry.AddGauge("g", "", {"case"});
  REQUIRE(family.ok());
  const std::map<std::string, double> cases = {
      {"big_integer", 123456789012345.0},
      {"huge", 1e20},
      {"inf", std::numeric_limits<double>::infinity()},
      {"nan", std::numeric_limits<double>::quiet_NaN()},
      {"negative_inf", -std::numeric_limits<double>::infinity()},
      {"one_tenth", 0.1},
      {"third", 1.0 / 3},
      {"tiny", 1e-9},
      {"zero", 0},
  };
  for (const auto& [name, value] : cases) {
    (*family)->WithLabels({name}).Set(value);
  }

  const std::string text = registry.Render();
  CHECK(absl::StrContains(text, "g{case=\"big_integer\"} 123456789012345\n"));
  CHECK(absl::StrContains(text, "g{case=\"huge\"} 1e+20\n"));
  CHECK(absl::StrContains(text, "g{case=\"inf\"} +Inf\n"));
  CHECK(absl::StrContains(text, "g{case=\"nan\"} NaN\n"));
  CHECK(absl::StrContains(text, "g{case=\"negative_inf\"} -Inf\n"));
  CHECK(absl::StrContains(text, "g{case=\"one_tenth\"} 0.1\n"));
  CHECK(absl::StrContains(text, "g{case=\"tiny\"} 1e-09\n"));
  CHECK(absl::StrContains(text, "g{case=\"zero\"} 0\n"));

  // Every value reads back exactly.
  const ParsedMetrics parsed = RenderAndParse(registry);
  for (const auto& [name, value] : cases) {
    INFO(name);
    const std::optional<double> read = parsed.Value("g", {{"case", name}});
    REQUIRE(read.has_value());
    if (std::isnan(value)) {
      CHECK(std::isnan(*read));
    } else {
      CHECK(*read == value);
    }
  }
}

TEST_CASE("Counters only go up and show their new value", "[framework]") {
  MetricsRegistry registry;
  CounterFamily& family = MustAddCounter(registry, "events_total", {"kind"});
  Counter& deposits = family.WithLabels({"deposit"});
  CHECK(&family.WithLabels({"deposit"}) == &deposits);
  CHECK(&family.WithLabels({"withdrawal"}) != &deposits);

  deposits.Increment();
  CHECK(RenderAndParse(registry).Value("events_total", {{"kind", "deposit"}}) ==
        1);
  deposits.Increment(2.5);
  deposits.Increment(-10);
  deposits.Increment(std::numeric_limits<double>::quiet_NaN());
  CHECK(deposits.value() == 3.5);
  CHECK(RenderAndParse(registry).Value("events_total", {{"kind", "deposit"}}) ==
        3.5);

  absl::StatusOr<GaugeFamily*> gauge = registry.AddGauge("depth", "");
  REQUIRE(gauge.ok());
  Gauge& depth = (*gauge)->WithLabels({});
  depth.Add(5);
  depth.Add(-7);
  CHECK(depth.value() == -2);
  depth.Set(1.5);
  CHECK(RenderAndParse(registry).Value("depth") == 1.5);
}

TEST_CASE("Histograms count cumulatively with +Inf equal to the count",
          "[framework]") {
  MetricsRegistry registry;
  absl::StatusOr<HistogramFamily*> family =
      registry.AddHistogram("request_seconds", "", {"route"},
                            MetricsRegistry::DefaultLatencyBuckets());
  REQUIRE(family.ok());
  CHECK((*family)->upper_bounds() ==
        std::vector<double>{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                            0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  Histogram& histogram = (*family)->WithLabels({"/x"});
  // A value equal to a bound counts in that bound's bucket.
  for (double value : {0.0001, 0.001, 0.003, 0.003, 1.0, 20.0}) {
    histogram.Observe(value);
  }

  const Histogram::Snapshot snapshot = histogram.TakeSnapshot();
  CHECK(snapshot.count == 6);
  CHECK(snapshot.sum == Approx(21.0071));
  REQUIRE(snapshot.cumulative_counts.size() == 15);
  CHECK(snapshot.cumulative_counts[0] == 1);   // le 0.0005
  CHECK(snapshot.cumulative_counts[1] == 2);   // le 0.001
  CHECK(snapshot.cumulative_counts[3] == 4);   // le 0.005
  CHECK(snapshot.cumulative_counts[9] == 4);   // le 0.5
  CHECK(snapshot.cumulative_counts[10] == 5);  // le 1
  CHECK(snapshot.cumulative_counts[13] == 5);  // le 10
  CHECK(snapshot.cumulative_counts[14] == 6);  // +Inf

  const ParsedMetrics parsed = RenderAndParse(registry);
  auto bucket = [&](const std::string& le) {
    return parsed.Value("request_seconds_bucket",
                        {{"route", "/x"}, {"le", le}});
  };
  CHECK(bucket("0.0005") == 1);
  CHECK(bucket("0.001") == 2);
  CHECK(bucket("0.0025") == 2);
  CHECK(bucket("0.005") == 4);
  CHECK(bucket("1") == 5);
  CHECK(bucket("2.5") == 5);
  CHECK(bucket("+Inf") == 6);
  CHECK(parsed.Value("request_seconds_count", {{"route", "/x"}}) == 6);
  CHECK(parsed.Value("request_seconds_sum", {{"route", "/x"}}) ==
        Approx(21.0071));

  // NaN is counted, in the +Inf bucket only.
  histogram.Observe(std::numeric_limits<double>::quiet_NaN());
  const Histogram::Snapshot with_nan = histogram.TakeSnapshot();
  CHECK(with_nan.count == 7);
  CHECK(with_nan.cumulative_counts[13] == 5);
  CHECK(std::isnan(with_nan.sum));
}

TEST_CASE("Wrong label counts go to a discard child that is never rendered",
          "[framework]") {
  std::vector<std::string> logged;
  SetLogSinkForTesting(
      [&logged](absl::string_view line) { logged.emplace_back(line); });
  MetricsRegistry registry;
  CounterFamily& family = MustAddCounter(registry, "ops_total", {"op"});
  Counter& discard = family.WithLabels({});
  discard.Increment(100);
  CHECK(&family.WithLabels({"a", "b"}) == &discard);
  family.WithLabels({"read"}).Increment();

  absl::StatusOr<HistogramFamily*> histograms =
      registry.AddHistogram("h", "", {}, {1});
  REQUIRE(histograms.ok());
  (*histograms)->WithLabels({"unexpected"}).Observe(0.5);
  SetLogSinkForTesting(nullptr);

  // One line per family, however often the mistake repeats.
  REQUIRE(logged.size() == 2);
  CHECK(absl::StrContains(logged[0], "ops_total"));
  CHECK(absl::StrContains(logged[1], "wrong number of label values"));

  const ParsedMetrics parsed = RenderAndParse(registry);
  CHECK(parsed.Value("ops_total", {{"op", "read"}}) == 1);
  CHECK(parsed.Value("h_count") == 0);
  size_t ops_samples = 0;
  for (const testing::Sample& sample : parsed.samples) {
    if (sample.name == "ops_total") ++ops_samples;
  }
  CHECK(ops_samples == 1);
}

TEST_CASE("Concurrent updates add up exactly", "[framework]") {
  MetricsRegistry registry;
  CounterFamily& counters = MustAddCounter(registry, "hits_total", {"shard"});
  absl::StatusOr<HistogramFamily*> histograms =
      registry.AddHistogram("sizes", "", {"shard"}, {1, 10});
  REQUIRE(histograms.ok());
  absl::StatusOr<GaugeFamily*> gauges = registry.AddGauge("level", "");
  REQUIRE(gauges.ok());

  constexpr int kThreads = 4;
  constexpr int kIterations = 20000;
  std::vector<std::thread> threads;
  std::vector<Counter*> shared_counter(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Every thread creates the same children concurrently.
      Counter& hits = counters.WithLabels({"0"});
      shared_counter[t] = &hits;
      Histogram& sizes = (*histograms)->WithLabels({"0"});
      Gauge& level = (*gauges)->WithLabels({});
      for (int i = 0; i < kIterations; ++i) {
        hits.Increment();
        counters.WithLabels({std::to_string(i % 3)}).Increment(0.5);
        sizes.Observe(i % 20);
        level.Add(t % 2 == 0 ? 1 : -1);
      }
    });
  }
  // Renders while writers run must still be valid expositions.
  for (int i = 0; i < 20; ++i) RenderAndParse(registry);
  for (std::thread& thread : threads) thread.join();

  for (int t = 1; t < kThreads; ++t) {
    CHECK(shared_counter[t] == shared_counter[0]);
  }
  const ParsedMetrics parsed = RenderAndParse(registry);
  const double total = kThreads * kIterations;
  // Shard "0" got every thread's direct increments plus a third of the
  // half-increments (i % 3 == 0 for 6667 of 20000 values of i).
  CHECK(parsed.Value("hits_total", {{"shard", "0"}}) ==
        total + kThreads * 6667 * 0.5);
  CHECK(parsed.Value("hits_total", {{"shard", "1"}}) == kThreads * 6667 * 0.5);
  CHECK(parsed.Value("hits_total", {{"shard", "2"}}) == kThreads * 6666 * 0.5);
  CHECK(parsed.Value("sizes_count", {{"shard", "0"}}) == total);
  // i % 20 is 0 or 1 in 2 of every 20 iterations, at most 10 in 11.
  CHECK(parsed.Value("sizes_bucket", {{"shard", "0"}, {"le", "1"}}) ==
        total * 2 / 20);
  CHECK(parsed.Value("sizes_bucket", {{"shard", "0"}, {"le", "10"}}) ==
        total * 11 / 20);
  CHECK(parsed.Value("sizes_sum", {{"shard", "0"}}) ==
        kThreads * (kIterations / 20) * 190.0);
  CHECK(parsed.Value("level") == 0);
}

TEST_CASE("Invalid names and bounds are rejected", "[framework]") {
  MetricsRegistry registry;
  for (const char* name : {"", "1abc", "a-b", "a b", "caf\xc3\xa9", "x{y}"}) {
    INFO(name);
    absl::StatusOr<CounterFamily*> family = registry.AddCounter(name, "");
    CHECK(family.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(registry.AddGauge("ns:subsystem_name_2", "").ok());

  for (const std::vector<std::string>& labels :
       std::vector<std::vector<std::string>>{
           {""}, {"1a"}, {"a-b"}, {"__reserved"}, {"a:b"}, {"x", "x"}}) {
    INFO(labels.back());
    CHECK(registry.AddGauge("labelled", "", labels).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  // "le" is only reserved in histograms.
  CHECK(registry.AddGauge("with_le", "", {"le", "_x9"}).ok());
  CHECK(registry.AddHistogram("h1", "", {"le"}, {1}).status().code() ==
        absl::StatusCode::kInvalidArgument);

  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const std::vector<double>& bounds : std::vector<std::vector<double>>{
           {}, {1, 1}, {2, 1}, {1, nan}, {1, inf}, {-inf, 1}}) {
    INFO(bounds.size());
    CHECK(registry.AddHistogram("h2", "", {}, bounds).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(registry.AddHistogram("h2", "", {}, {-1, 0, 0.5}).ok());

  // Nothing rejected was registered.
  const ParsedMetrics parsed = RenderAndParse(registry);
  CHECK(parsed.types.size() == 3);
}

TEST_CASE("Names already taken are rejected", "[framework]") {
  MetricsRegistry registry;
  MustAddCounter(registry, "jobs_total");
  REQUIRE(registry.AddHistogram("duration", "", {}, {1}).ok());

  absl::StatusOr<GaugeFamily*> same_name = registry.AddGauge("jobs_total", "");
  CHECK(same_name.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(same_name.status().message(), "already registered"));
  CHECK(registry.AddCounter("jobs_total", "", {"x"}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  // A histogram's sample names are taken too, both ways round.
  CHECK(registry.AddCounter("duration_count", "").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(registry.AddHistogram("jobs", "", {}, {1}).ok());
  CHECK(registry.AddHistogram("jobs_total_x", "", {}, {1}).ok());
  MustAddCounter(registry, "latency_sum");
  CHECK(registry.AddHistogram("latency", "", {}, {1}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

// The parser itself: what it must let through, and what it must reject.

TEST_CASE("The exposition parser accepts valid text", "[framework]") {
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(
      "# a free comment\n"
      "\n"
      "untyped_first 1\n"
      "# TYPE later counter\n"
      "later{a=\"x\",} 2 1700000000000\n"
      "  spaced { a = \"y\" , b=\"z\" }   +3.5e2  \n"
      "# HELP h  Help with \\\\ and \\n.\n"
      "# TYPE h histogram\n"
      "h_bucket{le=\"0.1\"} 1\n"
      "h_bucket{le=\"+Inf\"} 2\n"
      "h_sum 0.3\n"
      "h_count 2\n");
  REQUIRE(parsed.ok());
  CHECK(parsed->types.at("later") == "counter");
  CHECK(parsed->help.at("h") == "Help with \\ and \n.");
  CHECK(parsed->Value("untyped_first") == 1);
  CHECK(parsed->Value("later", {{"a", "x"}}) == 2);
  CHECK(parsed->samples[1].timestamp_ms == 1700000000000);
  CHECK(parsed->Value("spaced", {{"a", "y"}, {"b", "z"}}) == 350);
  CHECK(parsed->Value("h_bucket", {{"le", "+Inf"}}) == 2);
  CHECK(parsed->Value("h_bucket") == std::nullopt);
  CHECK(parsed->samples.back().line == 12);
  CHECK(ParsePrometheusText("").ok());
}

TEST_CASE("The exposition parser rejects malformed text", "[framework]") {
  struct Case {
    const char* text;
    // Part of the expected message, after "line N: ".
    const char* reason;
  };
  const std::vector<Case> bad = {
      {"x 1\n# TYPE x counter\n", "line 2: TYPE line for x after its sample x"},
      {"x_bucket{le=\"+Inf\"} 1\n# TYPE x histogram\n",
       "line 2: TYPE line for x after its sample x_bucket"},
      {"# TYPE x counter\n# TYPE x counter\n", "line 2: second TYPE"},
      {"# HELP x a\n# HELP x b\n", "line 2: second HELP"},
      {"# TYPE x Counter\n", "unknown metric type"},
      {"# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"2\"} 2\n"
       "h_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 3\n",
       "line 3: h buckets are not cumulative"},
      {"# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_sum 1\nh_count 3\n",
       "no le=\"+Inf\" bucket"},
      {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 4\n",
       "line 4: h_count is 4 but the +Inf bucket holds 3"},
      {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\n",
       "has no _count"},
      {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_count 3\n",
       "has no _sum"},
      {"# TYPE h histogram\nh_bucket 3\n", "h_bucket without le"},
      {"# TYPE h histogram\nh_bucket{le=\"one\"} 3\n", "invalid le"},
      {"# TYPE h histogram\nh_bucket{le=\"1\"} -1\n", "non-negative count"},
      {"# TYPE h histogram\nh 3\n", "without a _bucket, _sum or _count"},
      {"x{a=\"\\t\"} 1\n", "invalid escape sequence \\t"},
      {"# HELP x tab\\t\n", "invalid escape sequence \\t"},
      {"# HELP x ends\\\n", "a backslash ends the text"},
      {"x{a=\"b} 1\n", "unterminated label value"},
      {"x{a=b} 1\n", "expected '\"'"},
      {"x{a=\"b\" c=\"d\"} 1\n", "expected ',' or '}'"},
      {"x 1.2.3\n", "invalid value \"1.2.3\""},
      {"x one\n", "invalid value \"one\""},
      {"x +-1\n", "invalid value"},
      {"x\n", "missing value"},
      {"x 1 1.5\n", "invalid timestamp"},
      {"x 1 2 3\n", "unexpected text after the timestamp"},
      {"1x 1\n", "invalid metric name"},
      {"x-y 1\n", "invalid metric name"},
      {"# TYPE x-y counter\n", "invalid metric name in TYPE"},
      {"x{1a=\"b\"} 1\n", "invalid label name"},
      {"x{a=\"b\",a=\"c\"} 1\n", "label a repeated"},
      {"x{__name__=\"b\"} 1\n", "__name__ is reserved"},
      {"x{a=\"b\"} 1\nx{a=\"b\"} 2\n", "line 2: duplicate sample x"},
      {"x 1", "line 1: the last line does not end with a line feed"},
  };
  for (const Case& c : bad) {
    INFO(c.text);
    const absl::Status status = ParsePrometheusText(c.text).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StartsWith(status.message(), "line "));
    CHECK_THAT(std::string(status.message()), Catch::Contains(c.reason));
  }
}

TEST_CASE(
    "RequestMetrics counts each method, route and status apart, from any "
    "thread",
    "[framework]") {
  MetricsRegistry registry;
  absl::StatusOr<std::unique_ptr<http::RequestMetrics>> metrics =
      http::RequestMetrics::Create(&registry);
  REQUIRE(metrics.ok());
  auto record = [&](absl::string_view method, absl::string_view route,
                    int status) {
    http::RequestInfo info;
    info.method = method;
    info.route = route;
    info.status = status;
    info.duration = absl::Milliseconds(3);
    (*metrics)->Record(info);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 250; ++i) record("GET", "/accounts/{id}", 200);
    });
  }
  for (std::thread& thread : threads) thread.join();
  record("GET", "/accounts/{id}", 404);
  record("POST", "/accounts/{id}", 200);
  record("BREW", "/accounts/{id}", 200);
  record("PATCH", "/accounts/{id}", 200);

  const ParsedMetrics parsed = RenderAndParse(registry);
  const std::string requests = "cqrs_http_requests_total";
  const std::string route = "/accounts/{id}";
  CHECK(parsed.Value(
            requests,
            {{"method", "GET"}, {"route", route}, {"status", "200"}}) == 1000);
  CHECK(parsed.Value(
            requests,
            {{"method", "GET"}, {"route", route}, {"status", "404"}}) == 1);
  CHECK(parsed.Value(
            requests,
            {{"method", "POST"}, {"route", route}, {"status", "200"}}) == 1);
  // A method nobody standardized shares one series.
  CHECK(parsed.Value(
            requests,
            {{"method", "other"}, {"route", route}, {"status", "200"}}) == 1);
  CHECK(parsed.Value(
            requests,
            {{"method", "PATCH"}, {"route", route}, {"status", "200"}}) == 1);
  CHECK(parsed.Value("cqrs_http_request_duration_seconds_count",
                     {{"method", "GET"}, {"route", route}}) == 1001);
}

}  // namespace
}  // namespace cqrs
