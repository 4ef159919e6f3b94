#include "framework/log.h"

#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "rapidjson/document.h"
#include "tests/framework/http/log_capture.h"

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

}  // namespace
}  // namespace cqrs
