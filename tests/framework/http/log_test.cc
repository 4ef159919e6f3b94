#include "framework/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "rapidjson/document.h"
#include "tests/framework/http/log_capture.h"
#include "tests/support/wait.h"

namespace cqrs {
namespace {

using http_test::LogCapture;

TEST_CASE("text log line has timestamp level message and fields",
          "[http][log]") {
  LogCapture capture;
  Log(LogLevel::kInfo, "account opened",
      {{"account_id", "a1"},
       {"amount", 1500},
       {"big", uint64_t{18446744073709551615u}},
       {"ok", true},
       {"owner", "Ada Lovelace"},
       {"empty", ""},
       {"tricky", "a\"b=c\nd"}});
  const std::vector<std::string> lines = capture.Lines();
  REQUIRE(lines.size() == 1);
  const std::regex pattern(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO account opened )"
      R"(account_id=a1 amount=1500 big=18446744073709551615 ok=true )"
      R"(owner="Ada Lovelace" empty="" tricky="a\\"b=c\\nd"\n$)");
  CHECK(std::regex_match(lines[0], pattern));
}

TEST_CASE("a line's timestamp is its time, also across a second",
          "[http][log]") {
  LogCapture capture;
  // The part up to the seconds is cached per second: lines on both sides
  // of a second's turn.
  const int64_t second = absl::ToUnixSeconds(absl::Now());
  std::vector<std::pair<absl::Time, absl::Time>> bounds;
  auto log_one = [&] {
    const absl::Time before = absl::Now();
    Log(LogLevel::kInfo, "tick");
    bounds.emplace_back(before, absl::Now());
  };
  log_one();
  REQUIRE(cqrs::testing::Eventually(
      [&] { return absl::ToUnixSeconds(absl::Now()) > second; },
      absl::Seconds(5), absl::Milliseconds(1)));
  log_one();
  const std::vector<std::string> lines = capture.Lines();
  REQUIRE(lines.size() == 2);
  for (size_t i = 0; i < lines.size(); ++i) {
    INFO(lines[i]);
    absl::Time at;
    std::string error;
    REQUIRE(absl::ParseTime("%Y-%m-%dT%H:%M:%E3SZ", lines[i].substr(0, 24),
                            absl::UTCTimeZone(), &at, &error));
    // Milliseconds, rounded down.
    CHECK(at >= absl::FromUnixMillis(absl::ToUnixMillis(bounds[i].first)));
    CHECK(at <= bounds[i].second);
  }
}

TEST_CASE("a message with a newline stays on one line", "[http][log]") {
  LogCapture capture;
  Log(LogLevel::kWarn, "first\nsecond");
  const std::vector<std::string> lines = capture.Lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find('\n') == lines[0].size() - 1);
  CHECK(lines[0].find(" WARN first\\nsecond\n") != std::string::npos);
}

TEST_CASE("JSON log line parses back with escaped values", "[http][log]") {
  LogCapture capture;
  SetLogFormat(LogFormat::kJson);
  Log(LogLevel::kError, "db \"down\"",
      {{"attempt", -3},
       {"ratio", 0.5},
       {"flag", false},
       {"text", "tab\there \\ \x01 end"},
       {"bad_utf8",
        "a\xff"
        "b"}});
  const std::vector<std::string> lines = capture.Lines();
  REQUIRE(lines.size() == 1);
  REQUIRE(lines[0].back() == '\n');
  CHECK(lines[0].find('\n') == lines[0].size() - 1);
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(lines[0].c_str());
  REQUIRE_FALSE(doc.HasParseError());
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["level"].GetString()) == "error");
  CHECK(std::string(doc["msg"].GetString()) == "db \"down\"");
  CHECK(std::regex_match(
      std::string(doc["ts"].GetString()),
      std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  REQUIRE(doc["attempt"].IsInt64());
  CHECK(doc["attempt"].GetInt64() == -3);
  REQUIRE(doc["ratio"].IsDouble());
  CHECK(doc["ratio"].GetDouble() == 0.5);
  REQUIRE(doc["flag"].IsBool());
  CHECK_FALSE(doc["flag"].GetBool());
  CHECK(std::string(doc["text"].GetString()) == "tab\there \\ \x01 end");
  CHECK(std::string(doc["bad_utf8"].GetString()) ==
        "a\xEF\xBF\xBD"
        "b");
}

TEST_CASE("lines below the minimum level are dropped", "[http][log]") {
  LogCapture capture;
  SetMinLogLevel(LogLevel::kWarn);
  CHECK_FALSE(LogEnabled(LogLevel::kInfo));
  CHECK(LogEnabled(LogLevel::kError));
  Log(LogLevel::kDebug, "debug line");
  Log(LogLevel::kInfo, "info line");
  Log(LogLevel::kWarn, "warn line");
  Log(LogLevel::kError, "error line");
  const std::vector<std::string> lines = capture.Lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find("WARN warn line") != std::string::npos);
  CHECK(lines[1].find("ERROR error line") != std::string::npos);

  SetMinLogLevel(LogLevel::kDebug);
  Log(LogLevel::kDebug, "debug line");
  CHECK(capture.Lines().size() == 3);
}

TEST_CASE("log levels parse from text", "[http][log]") {
  LogLevel level = LogLevel::kInfo;
  CHECK(ParseLogLevel("DEBUG", &level));
  CHECK(level == LogLevel::kDebug);
  CHECK(ParseLogLevel("warning", &level));
  CHECK(level == LogLevel::kWarn);
  CHECK(ParseLogLevel("error", &level));
  CHECK(level == LogLevel::kError);
  CHECK_FALSE(ParseLogLevel("verbose", &level));
  CHECK(level == LogLevel::kError);
  CHECK(LogLevelName(LogLevel::kInfo) == "INFO");
}

TEST_CASE("concurrent lines never interleave", "[http][log]") {
  LogCapture capture;
  SetLogFormat(LogFormat::kJson);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        Log(LogLevel::kInfo, "tick",
            {{"thread", t}, {"i", i}, {"pad", std::string(300, 'x')}});
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::vector<std::string> lines = capture.Lines();
  REQUIRE(lines.size() == 800);
  for (const std::string& line : lines) {
    rapidjson::Document doc;
    doc.Parse(line.c_str());
    REQUIRE_FALSE(doc.HasParseError());
  }
}

// Points stderr at a pipe for the duration of a test; Read() returns what
// has arrived so far.
class StderrPipe {
 public:
  StderrPipe() {
    FlushLog();
    REQUIRE(pipe2(fds_, O_CLOEXEC) == 0);
    REQUIRE(fcntl(fds_[0], F_SETFL, O_NONBLOCK) == 0);
    saved_ = dup(STDERR_FILENO);
    REQUIRE(saved_ >= 0);
    REQUIRE(dup2(fds_[1], STDERR_FILENO) == STDERR_FILENO);
  }
  ~StderrPipe() {
    FlushLog();
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    close(fds_[0]);
    close(fds_[1]);
  }
  std::string Read() {
    char buffer[4096];
    ssize_t n;
    while ((n = read(fds_[0], buffer, sizeof buffer)) > 0) {
      received_.append(buffer, static_cast<size_t>(n));
    }
    return received_;
  }

 private:
  int fds_[2] = {-1, -1};
  int saved_ = -1;
  std::string received_;
};

TEST_CASE(
    "info lines reach stderr within milliseconds, warnings at once, all in "
    "order",
    "[http][log]") {
  StderrPipe err;
  Log(LogLevel::kInfo, "first");
  Log(LogLevel::kInfo, "second");
  // A warning takes every pending line with it, in order, before it returns.
  Log(LogLevel::kWarn, "third");
  const std::string now = err.Read();
  const size_t first = now.find("INFO first\n");
  const size_t second = now.find("INFO second\n");
  const size_t third = now.find("WARN third\n");
  REQUIRE(first != std::string::npos);
  REQUIRE(second != std::string::npos);
  REQUIRE(third != std::string::npos);
  CHECK(first < second);
  CHECK(second < third);

  // An info line on its own is written by the background flusher.
  Log(LogLevel::kInfo, "fourth");
  CHECK(testing::Eventually(
      [&] { return absl::StrContains(err.Read(), "INFO fourth\n"); }));

  // FlushLog writes what is pending before it returns.
  for (int i = 0; i < 100; ++i) Log(LogLevel::kInfo, "many", {{"i", i}});
  FlushLog();
  const std::string all = err.Read();
  CHECK(absl::StrContains(all, "INFO many i=0\n"));
  CHECK(absl::StrContains(all, "INFO many i=99\n"));
  CHECK(all.find("i=0\n") < all.find("i=99\n"));
}

}  // namespace
}  // namespace cqrs
